-- pgxjob_record_job_results(...): every outcome of a run, recorded in one call per batch.
begin;
\ir helpers.psql
select plan(65);

select t_setup();
select t_worker('g1') as w \gset

-- Runs are logged with the job's fields and the run's times.
create function t_run(p_job_id bigint)
returns table (run_number int, error text, started_at timestamptz, finished_at timestamptz)
language sql
as $$
  select r.run_number, r.error, r.started_at, r.finished_at
  from pgxjob_job_runs r
  where r.job_id = p_job_id
  order by r.run_number
$$;

-- Success of an ASAP job
select pgxjob_schedule('t1', '{"ok": 1}') as ok_job \gset
select count(*) from pgxjob_fetch_jobs(:w, 100);
select is(t_record(:ok_job), 1, 'a success returns one changed job');
select is(t_job_table(:ok_job), null, 'a success deletes the job');
select row_eq(
  format('select job_id, run_number, group_id, type_id, inserted_at, run_at, started_at,
                 finished_at, params::text, error
          from pgxjob_job_runs where job_id = %s', :ok_job),
  row(:ok_job::bigint, 1,
      (select id from pgxjob_groups where name = 'g1'),
      (select id from pgxjob_job_types where name = 't1'),
      now(), now(), now() - interval '2 seconds', now() - interval '1 second',
      '{"ok": 1}'::text, null::text),
  'a success logs run 1 with the job''s group, type, times and params, and no error'
);

-- Failure without retry
select pgxjob_schedule('t1') as fail_job \gset
select count(*) from pgxjob_fetch_jobs(:w, 100);
select is(t_record(:fail_job, 0, 'boom'), 1, 'a failure returns one changed job');
select is(t_job_table(:fail_job), null, 'a failure without a retry time deletes the job');
select results_eq(format('select run_number, error from t_run(%s)', :fail_job),
  $$values (1, 'boom'::text)$$, 'a failure logs its error');

-- Explicit retry_at of an ASAP job: it moves to the timed table with the same id.
select pgxjob_schedule('t1', '{"r": 1}') as retry_job \gset
select count(*) from pgxjob_fetch_jobs(:w, 100);
select is(t_record(:retry_job, 0, 'try again', now() + interval '1 minute'), 1,
  'a retry returns one changed job');
select is(t_job_table(:retry_job), 'run_at', 'a retried ASAP job moves to the timed table');
select row_eq(
  format('select error_count, last_error, next_run_at, run_at, worker_id, params::text,
                 inserted_at, group_id, type_id
          from pgxjob_run_at_jobs where id = %s', :retry_job),
  row(1, 'try again'::text, now() + interval '1 minute', now(), null::int, '{"r": 1}'::text,
      now(), (select id from pgxjob_groups where name = 'g1'),
      (select id from pgxjob_job_types where name = 't1')),
  'same id, error_count 1, last_error, next_run_at = retry_at, released, fields kept'
);
select results_eq(format('select run_number, error from t_run(%s)', :retry_job),
  $$values (1, 'try again'::text)$$, 'the failed attempt is logged as run 1');

-- Retry of a timed job: error_count and next_run_at advance and the job is released.
select count(*) from pgxjob_fetch_jobs(:w, 100, now() + interval '1 minute');
select is(t_owner(:retry_job), :w, 'the retry is fetched again when due');
select is(t_record(:retry_job, 1, 'again', now() + interval '5 minutes'), 1,
  'a timed retry returns one changed job');
select row_eq(
  format('select error_count, last_error, next_run_at, run_at, worker_id
          from pgxjob_run_at_jobs where id = %s', :retry_job),
  row(2, 'again'::text, now() + interval '5 minutes', now(), null::int),
  'a timed retry bumps error_count, sets last_error and next_run_at, keeps run_at, releases it'
);
select results_eq(format('select run_number, error from t_run(%s)', :retry_job),
  $$values (1, 'try again'::text), (2, 'again'::text)$$, 'the second attempt is run 2');

-- Stale results: error_count does not match the job's (another worker ran it since).
select is(t_record(:retry_job, 1, 'stale', now() + interval '1 hour'), 0,
  'a stale retry changes nothing');
select is(t_record(:retry_job, 0, 'stale final failure'), 0,
  'a stale final failure changes nothing');
select row_eq(
  format('select error_count, last_error, next_run_at from pgxjob_run_at_jobs where id = %s',
         :retry_job),
  row(2, 'again'::text, now() + interval '5 minutes'),
  'the job is unchanged by stale results'
);
select is((select count(*)::int from pgxjob_job_runs where job_id = :retry_job), 2,
  'stale results log no run');

-- Success of a timed job that has failed before
select t_claim(:retry_job, :w);
select is(t_record(:retry_job, 2), 1, 'a timed job''s success returns one changed job');
select is(t_job_table(:retry_job), null, 'a timed job''s success deletes it');
select results_eq(format('select run_number, error from t_run(%s)', :retry_job),
  $$values (1, 'try again'::text), (2, 'again'::text), (3, null::text)$$,
  'the success is run 3');

-- A success from the job's owner deletes the job whatever its error_count: it ran, it must not
-- run again.
select pgxjob_schedule('t1', null, null, now() + interval '1 second') as stale_ok \gset
update pgxjob_run_at_jobs set error_count = 1 where id = :stale_ok;
select t_claim(:stale_ok, :w);
select is(t_record(:stale_ok, 0), 1, 'the owner''s success deletes the job whatever its error_count');
select is(t_job_table(:stale_ok), null, 'the job that succeeded is gone');

-- Linear backoff, computed on p_now.
select pgxjob_schedule('t1') as backoff_asap \gset
select t_claim(:backoff_asap, :w);
select is(
  t_record(:backoff_asap, 0, 'flaky', p_max_retries => 3, p_base_delay => interval '10 seconds',
           p_now => '2030-01-01 00:00:00+00'),
  1, 'a backoff retry returns one changed job');
select row_eq(
  format('select error_count, next_run_at from pgxjob_run_at_jobs where id = %s', :backoff_asap),
  row(1, '2030-01-01 00:00:10+00'::timestamptz),
  'backoff after the first failure: p_now + 1 * base_delay'
);
select t_claim(:backoff_asap, :w);
select t_record(:backoff_asap, 1, 'flaky', p_max_retries => 3,
                p_base_delay => interval '10 seconds', p_now => '2030-01-01 00:01:00+00');
select t_claim(:backoff_asap, :w);
select t_record(:backoff_asap, 2, 'flaky', p_max_retries => 3,
                p_base_delay => interval '10 seconds', p_now => '2030-01-01 00:02:00+00');
select row_eq(
  format('select error_count, next_run_at from pgxjob_run_at_jobs where id = %s', :backoff_asap),
  row(3, '2030-01-01 00:02:30+00'::timestamptz),
  'backoff at error count max - 1: p_now + max * base_delay'
);
select t_claim(:backoff_asap, :w);
select is(
  t_record(:backoff_asap, 3, 'flaky', p_max_retries => 3, p_base_delay => interval '10 seconds',
           p_now => '2030-01-01 00:03:00+00'),
  1, 'an exhausted backoff is a final failure');
select is(t_job_table(:backoff_asap), null, 'an exhausted backoff deletes the job');
select results_eq(format('select run_number, error from t_run(%s)', :backoff_asap),
  $$values (1, 'flaky'::text), (2, 'flaky'), (3, 'flaky'), (4, 'flaky')$$,
  'every attempt is logged, the last as run max + 1');

-- Every shape of base delay retries at the time pgxjob_backoff_time gives, on either side of the
-- arithmetic fast path; past it (cases 3, 5 and 6) the function runs, once per result.
set local track_functions = 'all';
select coalesce(pg_stat_get_xact_function_calls('pgxjob_backoff_time'::regproc), 0) as backoff_calls \gset
create temp table t_backoff (n int, error_count int, base_delay interval, now timestamptz,
                             job_id bigint);
insert into t_backoff (n, error_count, base_delay, now) values
  (1, 2, '1 mon 2 days 03:04:05.5', '2030-01-01 00:00:00+00'),
  (2, 0, '-1 day +12:00', '2030-01-01 00:00:00+00'),
  (3, 999, '1 year', '2030-01-01 00:00:00+00'),
  (4, 2147483646, '1 microsecond', '2030-01-01 00:00:00+00'),
  (5, 3, '10 seconds', '290001-01-01 00:00:00+00'),
  (6, 1, '200000 years', '2030-01-01 00:00:00+00');
update t_backoff b set job_id = pgxjob_schedule('t1', null, null, now() + interval '1 hour');
update pgxjob_run_at_jobs j set error_count = b.error_count from t_backoff b where j.id = b.job_id;
select t_claim(job_id, :w) from t_backoff order by n;
select t_record(job_id, error_count, 'flaky', p_max_retries => 2147483647,
                p_base_delay => base_delay, p_now => now)
from t_backoff order by n;
select coalesce(pg_stat_get_xact_function_calls('pgxjob_backoff_time'::regproc), 0) - :backoff_calls
  as backoff_calls \gset
select results_eq(
  $$select b.n, j.next_run_at from t_backoff b
    left join pgxjob_run_at_jobs j on j.id = b.job_id order by b.n$$,
  $$select b.n, pgxjob_backoff_time(b.now, b.error_count, b.base_delay) from t_backoff b
    order by b.n$$,
  'each retry time is pgxjob_backoff_time''s, and a time out of range ends the job'
);
select is(:backoff_calls::int, 3, 'pgxjob_backoff_time ran once per result past the fast path');

select pgxjob_schedule('t1') as explicit_wins \gset
select t_claim(:explicit_wins, :w);
select t_record(:explicit_wins, 0, 'e', now() + interval '1 day', 3, interval '1 second');
select is((select next_run_at from pgxjob_run_at_jobs where id = :explicit_wins),
  now() + interval '1 day', 'an explicit retry_at wins over the backoff');

-- log = false
select pgxjob_schedule('t1') as quiet \gset
select t_claim(:quiet, :w);
select is(t_record(:quiet, p_log => false), 1, 'a success with log = false is recorded');
select is(t_job_table(:quiet), null, 'it deletes the job');
select is((select count(*)::int from pgxjob_job_runs where job_id = :quiet), 0,
  'log = false writes no run row');
select pgxjob_schedule('t1') as quiet_retry \gset
select t_claim(:quiet_retry, :w);
select t_record(:quiet_retry, 0, 'x', now(), p_log => false);
select is((select count(*)::int from pgxjob_job_runs where job_id = :quiet_retry), 0,
  'a retry with log = false writes no run row');

-- A run key logged before (by a reaped worker that ran the same attempt) does not error.
select pgxjob_schedule('t1') as dup \gset
insert into pgxjob_job_runs (job_id, run_number, group_id, type_id, inserted_at, run_at,
                             started_at, finished_at, error)
values (:dup, 1, 1, 1, now(), now(), now(), now(), 'first');
select t_claim(:dup, :w);
select lives_ok(format('select t_record(%s)', :dup), 'a duplicate run key does not error');
select is(t_job_table(:dup), null, 'the job is still deleted');
select results_eq(format('select run_number, error from t_run(%s)', :dup),
  $$values (1, 'first'::text)$$, 'the first row of the run is kept');

-- Unknown jobs, batches, empty input, bad input.
select is(t_record(-1), 0, 'a result for a job that is gone changes nothing');
select is((select count(*)::int from pgxjob_job_runs where job_id = -1), 0,
  'and logs nothing');

create temp table t_batch as
select id from pgxjob_schedule_many('t1', array['{}', '{}', '{}']::json[]) as id;
select t_claim(id, :w) from t_batch;
select is(
  (select changed from pgxjob_record_job_results(
    :w,
    array(select id from t_batch order by id) || (select max(id) from t_batch),
    array[0, 0, 0, 0],
    array[now(), now(), now(), now()],
    array[now(), now(), now(), now()],
    array[null, 'fail', null, 'last result wins'],
    array[null, null, null, now() + interval '1 hour']::timestamptz[],
    array[null, null, null, null]::int[],
    array[null, null, null, null]::interval[],
    array[true, true, true, true]
  )),
  3, 'a batch records every job once; returns how many changed');
select is(
  (select count(*)::int from t_batch where t_job_table(id) is null), 2,
  'the batch deleted the success and the failure');
select is(
  (select last_error from pgxjob_run_at_jobs where id = (select max(id) from t_batch)),
  'last result wins', 'a job listed twice in a batch takes its last result');

select results_eq(
  format($q$select * from pgxjob_record_job_results(%s, '{}', '{}', '{}', '{}', '{}', '{}', '{}',
         '{}', '{}')$q$, :w),
  $$values (0, '{}'::bigint[])$$,
  'an empty batch changes nothing');
select throws_ok(
  $$select pgxjob_record_job_results(1, array[1::bigint, 2], array[0], array[now(), now()],
      array[now(), now()], array[null, null]::text[], array[null, null]::timestamptz[],
      array[null, null]::int[], array[null, null]::interval[], array[true, true])$$,
  'PJ005', 'pgxjob: result arrays must all have 2 elements',
  'arrays of different lengths raise PJ005');

select throws_ok(
  $$select pgxjob_record_job_results(null, array[1::bigint], array[0], array[now()],
      array[now()], array[null]::text[], array[null]::timestamptz[], array[null]::int[],
      array[null]::interval[], array[true])$$,
  'PJ005', null, 'a null worker id raises PJ005');
select throws_ok(
  $$select pgxjob_record_job_results(1, array[1::bigint], array[0], array[null::timestamptz],
      array[now()], array[null]::text[], array[null]::timestamptz[], array[null]::int[],
      array[null]::interval[], array[true])$$,
  'PJ005', null, 'a null start time raises PJ005 instead of failing inside the batch');

-- Fencing: a result counts only while the reporting worker owns the job.
select t_worker('g1') as w_other \gset
select pgxjob_schedule('t1') as fenced_ok \gset
select pgxjob_schedule('t1') as fenced_retry \gset
select pgxjob_schedule('t1', null, null, now() + interval '1 second') as fenced_fail \gset
select t_claim(:fenced_ok, :w_other);
select t_claim(:fenced_retry, :w_other);
select t_claim(:fenced_fail, :w_other);
select results_eq(
  format($q$select * from pgxjob_record_job_results(%s,
      array[%s, %s, %s]::bigint[], array[0, 0, 0], array[now(), now(), now()],
      array[now(), now(), now()], array[null, 'late retry', 'late failure'],
      array[null, now() + interval '1 hour', null]::timestamptz[],
      array[null, null, null]::int[], array[null, null, null]::interval[],
      array[true, true, true])$q$, :w, :fenced_ok, :fenced_retry, :fenced_fail),
  format($q$values (0, array[%s, %s, %s]::bigint[])$q$, :fenced_ok, :fenced_retry, :fenced_fail),
  'results from a worker that does not own the jobs are stale: nothing changes, their ids return'
);
select results_eq(
  format($q$select id, worker_id from pgxjob_asap_jobs where id in (%s, %s)
            union all select id, worker_id from pgxjob_run_at_jobs where id = %s
            order by id$q$, :fenced_ok, :fenced_retry, :fenced_fail),
  format($q$values (%s::bigint, %s), (%s, %s), (%s, %s)$q$,
         :fenced_ok, :w_other, :fenced_retry, :w_other, :fenced_fail, :w_other),
  'the jobs stay where they were, owned by the worker running them'
);
select results_eq(
  format($q$select job_id, run_number, outcome from pgxjob_job_runs
            where job_id in (%s, %s, %s) order by job_id$q$,
         :fenced_ok, :fenced_retry, :fenced_fail),
  format($q$values (%s::bigint, 1, 'stale'::text), (%s, 1, 'stale'), (%s, 1, 'stale')$q$,
         :fenced_ok, :fenced_retry, :fenced_fail),
  'stale runs are logged with outcome stale while their run number is free'
);
select is(t_record(:fenced_retry, 0, 'real retry', now() + interval '1 hour'), 1,
  'the owner''s own result then applies');
select is((select outcome from pgxjob_job_runs where job_id = :fenced_retry and run_number = 1),
  'retried', 'and its run replaces the stale one in the log');

-- A row that cannot be applied as asked is a final failure that says why; the rest still apply.
select pgxjob_schedule('t1') as poison \gset
select pgxjob_schedule('t1') as healthy \gset
select t_claim(:poison, :w);
select t_claim(:healthy, :w);
select results_eq(
  format($q$select * from pgxjob_record_job_results(%s,
      array[%s, %s]::bigint[], array[0, 0], array[now(), now()], array[now(), now()],
      array['flaky', null], array[null, null]::timestamptz[], array[5, null],
      array[interval '1000000000 days', null], array[true, true])$q$, :w, :poison, :healthy),
  $$values (2, '{}'::bigint[])$$,
  'a retry time out of range does not fail the batch'
);
select is(t_job_table(:poison), null, 'the unappliable retry became a final failure');
select matches((select error from pgxjob_job_runs where job_id = :poison),
  '^flaky\n\(pgxjob: the retry time .* is out of range; recorded as a final failure\)$',
  'its run-log error keeps the handler''s error and says why');
select is(t_job_table(:healthy), null, 'the other result of the batch is recorded');
select pgxjob_schedule('t1', null, null, now() + interval '1 second') as maxed \gset
update pgxjob_run_at_jobs set error_count = 2147483647 where id = :maxed;
select t_claim(:maxed, :w);
select is(t_record(:maxed, 2147483647, 'again', now() + interval '1 hour'), 1,
  'a retry of a job at the largest error_count is recorded');
select is(t_job_table(:maxed), null, 'as a final failure');

-- Trace context: kept through retries, and with every logged run.
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
select pgxjob_schedule('t1', trace_context => :'tp') as traced \gset
select t_claim(:traced, :w);
select t_record(:traced, 0, 'first', now() + interval '1 minute');
select is((select trace_context from pgxjob_run_at_jobs where id = :traced), :'tp',
  'a retried ASAP job takes its trace context to the timed table');
select t_claim(:traced, :w);
select t_record(:traced, 1, 'second', now() + interval '2 minutes');
select is((select trace_context from pgxjob_run_at_jobs where id = :traced), :'tp',
  'a retried timed job keeps it');
select t_claim(:traced, :w);
select t_record(:traced, 2);
select results_eq(
  format('select run_number, outcome, trace_context from pgxjob_job_runs where job_id = %s
          order by run_number', :traced),
  format($$values (1, 'retried'::text, %1$L::text), (2, 'retried', %1$L), (3, 'succeeded', %1$L)$$,
         :'tp'),
  'every run of the job is logged with its trace context'
);
select pgxjob_schedule('t1') as untraced \gset
select t_claim(:untraced, :w);
select t_record(:untraced, 0, 'boom');
select is((select trace_context from pgxjob_job_runs where job_id = :untraced), null,
  'a run of a job without a trace context logs none');
select pgxjob_schedule('t1', trace_context => :'tp') as stale_traced \gset
select t_claim(:stale_traced, :w);
select is(t_record(:stale_traced, 0, p_worker_id => -5), 0, 'a result of another worker is stale');
select is(
  (select trace_context from pgxjob_job_runs where job_id = :stale_traced and outcome = 'stale'),
  :'tp', 'a stale run is logged with the job''s trace context'
);

select * from finish();
rollback;
