-- pgxjob_fetch_jobs(worker_id, limit, now): claims a batch of the worker's group for the worker.
begin;
\ir helpers.psql
select plan(33);

select t_setup();
select t_worker('g1') as w1 \gset
select t_worker('g1') as w1b \gset
select t_worker('g2') as w2 \gset

select is_empty(format('select * from pgxjob_fetch_jobs(%s, 10)', :w1),
  'an idle queue returns zero rows, not a row of nulls');

-- One ASAP job: every field.
select pgxjob_schedule('t1', '{"a": 1}') as a1 \gset
select results_eq(
  format('select id, group_id, type_id, type_name, params::text, inserted_at, run_at,
                 error_count, last_error, asap
          from pgxjob_fetch_jobs(%s, 10)', :w1),
  format($q$select %s::bigint, (select id from pgxjob_groups where name = 'g1'),
                   (select id from pgxjob_job_types where name = 't1'), 't1'::text,
                   '{"a": 1}'::text, now(), now(), 0, null::text, true$q$, :a1),
  'an ASAP job comes back with its fields; run_at is its inserted_at, asap is true'
);
select is(t_owner(:a1), :w1, 'the fetched job is owned by the worker');
select is_empty(format('select * from pgxjob_fetch_jobs(%s, 10)', :w1b),
  'another worker of the group skips jobs that are owned');
select is_empty(format('select * from pgxjob_fetch_jobs(%s, 10)', :w1),
  'the owner does not get its own jobs again');

-- Groups
select pgxjob_schedule('t1', group_name => 'g2') as g2job \gset
select is_empty(format('select * from pgxjob_fetch_jobs(%s, 10)', :w1),
  'a worker never takes another group''s jobs');
select results_eq(format('select id from pgxjob_fetch_jobs(%s, 10)', :w2),
  format('values (%s::bigint)', :g2job), 'the g2 worker takes the g2 job');

-- Limit and order
create temp table t_five as
select id from pgxjob_schedule_many('t1', array['{}', '{}', '{}', '{}', '{}']::json[]) as id;
select results_eq(
  format('select id from pgxjob_fetch_jobs(%s, 2) order by id', :w1),
  'select id from t_five order by id limit 2',
  'the limit caps the batch, and the oldest ASAP jobs go first'
);
select is((select count(*)::int from pgxjob_asap_jobs j join t_five using (id) where worker_id is null),
  3, 'the jobs beyond the limit stay unowned');
select results_eq(
  format('select id from pgxjob_fetch_jobs(%s, 100) order by id', :w1b),
  'select id from t_five order by id offset 2',
  'a second worker takes the rest'
);

-- Due time
select pgxjob_schedule('t1', '{"t": 1}', null, now() + interval '1 hour') as timed \gset
select is_empty(format('select * from pgxjob_fetch_jobs(%s, 10)', :w1),
  'a timed job is not fetched before its due time');
select is_empty(format($q$select * from pgxjob_fetch_jobs(%s, 10, now() + interval '59 minutes')$q$, :w1),
  'a timed job is not fetched a minute before its due time');
select results_eq(
  format($q$select id, params::text, run_at, error_count, last_error, asap
            from pgxjob_fetch_jobs(%s, 10, now() + interval '1 hour')$q$, :w1),
  format($q$select %s::bigint, '{"t": 1}'::text, now() + interval '1 hour', 0, null::text, false$q$,
         :timed),
  'a timed job is fetched at its due time, with run_at, error_count, last_error and asap false'
);
select is(t_owner(:timed), :w1, 'the fetched timed job is owned by the worker');

-- A retried timed job carries its error_count and last_error; next_run_at decides due time.
update pgxjob_run_at_jobs
set worker_id = null, error_count = 2, last_error = 'boom', next_run_at = now() + interval '2 hours'
where id = :timed;
select is_empty(format($q$select * from pgxjob_fetch_jobs(%s, 10, now() + interval '90 minutes')$q$, :w1),
  'a retry is due at next_run_at, not at run_at');
select results_eq(
  format($q$select error_count, last_error, run_at from pgxjob_fetch_jobs(%s, 10, now() + interval '2 hours')$q$, :w1),
  $$values (2, 'boom'::text, now() + interval '1 hour')$$,
  'a fetched retry reports its error_count, last_error and original run_at'
);

-- ASAP and due timed jobs compete by due time: an ASAP job is due from its insertion, a timed job
-- from next_run_at; a flood of due retries cannot starve ASAP jobs.
select pgxjob_schedule('t1') as asap_late \gset
select pgxjob_schedule('t1', null, null, now() + interval '20 minutes') as timed_b \gset
select pgxjob_schedule('t1', null, null, now() + interval '10 minutes') as timed_a \gset
select results_eq(
  format($q$select id from pgxjob_fetch_jobs(%s, 1, now() + interval '30 minutes')$q$, :w1),
  format('values (%s::bigint)', :asap_late),
  'an ASAP job inserted before the timed jobs fell due is claimed first'
);
select results_eq(
  format($q$select id, asap from pgxjob_fetch_jobs(%s, 10, now() + interval '30 minutes')$q$, :w1),
  format('values (%s::bigint, false), (%s::bigint, false)', :timed_a, :timed_b),
  'timed jobs in next_run_at order'
);
select pgxjob_schedule('t1', null, null, now() + interval '1 day') as timed_early \gset
update pgxjob_run_at_jobs set next_run_at = now() - interval '1 hour' where id = :timed_early;
select pgxjob_schedule('t1') as asap_new \gset
select results_eq(
  format($q$select id, asap from pgxjob_fetch_jobs(%s, 10)$q$, :w1),
  format('values (%s::bigint, false), (%s::bigint, true)', :timed_early, :asap_new),
  'a timed job that fell due before an ASAP job was inserted comes first, in one batch'
);

-- Priorities: higher first among due jobs, across both tables; then due time, then id.
select t_worker('g2') as wp \gset
select pgxjob_schedule('t1', group_name => 'g2') as p_low \gset
select pgxjob_schedule('t1', group_name => 'g2', priority => 5) as p_high \gset
select pgxjob_schedule('t1', group_name => 'g2', run_at => now() + interval '1 minute',
                       priority => 9) as p_timed_top \gset
select pgxjob_schedule('t1', group_name => 'g2', run_at => now() + interval '2 minutes',
                       priority => 9) as p_timed_later \gset
select pgxjob_schedule('t1', group_name => 'g2', run_at => now() + interval '1 minute',
                       priority => -3) as p_timed_low \gset
select results_eq(
  format($q$select id, priority from pgxjob_fetch_jobs(%s, 2)$q$, :wp),
  format('values (%s::bigint, 5), (%s, 0)', :p_high, :p_low),
  'before the timed jobs are due, the higher ASAP priority goes first'
);
select results_eq(
  format($q$select id, priority from pgxjob_fetch_jobs(%s, 10, now() + interval '90 seconds')$q$,
         :wp),
  format('values (%s::bigint, 9), (%s, -3)', :p_timed_top, :p_timed_low),
  'a due timed job of priority 9 comes before one of -3; a job not yet due is not claimed'
);
select pgxjob_schedule('t1', group_name => 'g2', priority => 9) as p_asap_top \gset
select results_eq(
  format($q$select id from pgxjob_fetch_jobs(%s, 10, now() + interval '3 minutes')$q$, :wp),
  format('values (%s::bigint), (%s)', :p_asap_top, :p_timed_later),
  'equal priorities go in due-time order across both tables'
);
select is(
  (select priority from pgxjob_run_at_jobs where id = :p_timed_later), 9,
  'the timed job keeps its priority'
);

-- Errors
select throws_ok($$select * from pgxjob_fetch_jobs(-1, 10)$$, 'PJ004',
  'pgxjob: worker -1 is not registered', 'an unregistered worker raises PJ004');
select pgxjob_unregister_worker(:w1b);
select throws_ok(format('select * from pgxjob_fetch_jobs(%s, 10)', :w1b), 'PJ004', null,
  'an unregistered (or reaped) worker cannot claim jobs');
select throws_ok(format('select * from pgxjob_fetch_jobs(%s, 0)', :w1), 'PJ005', null,
  'a zero limit raises PJ005');
select throws_ok(format('select * from pgxjob_fetch_jobs(%s, null)', :w1), 'PJ005', null,
  'a null limit raises PJ005');
select throws_ok('select * from pgxjob_fetch_jobs(null, 10)', 'PJ004', null,
  'a null worker raises PJ004');

-- Named notation with the clock argument
select pgxjob_schedule('t1', null, null, now() + interval '3 hours') as timed_named \gset
select results_eq(
  format($q$select id from pgxjob_fetch_jobs(p_worker_id => %s, p_limit => 10,
                                              p_now => now() + interval '3 hours')$q$, :w1),
  format('(select id from t_five order by id offset 2) union all select %s::bigint', :timed_named),
  'p_now moves the clock; the jobs the unregistered worker released are claimed again'
);
select is((select count(*)::int from pgxjob_asap_jobs where worker_id is null), 0,
  'every ASAP job was claimed once');
select is((select count(*)::int from pgxjob_run_at_jobs where worker_id is null), 0,
  'every timed job was claimed once');

-- Trace context: each job comes back with the traceparent it was scheduled with.
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
select pgxjob_schedule('t1', trace_context => :'tp') as traced \gset
select pgxjob_schedule('t1') as untraced \gset
select results_eq(
  format('select id, trace_context from pgxjob_fetch_jobs(%s, 10) order by id', :w1),
  format('values (%s::bigint, %L::text), (%s, null)', :traced, :'tp', :untraced),
  'fetch returns each job''s trace context, null for a job scheduled without one'
);
select pgxjob_schedule('t1', run_at => now() + interval '1 hour', trace_context => :'tp')
  as traced_timed \gset
select is(
  (select trace_context from pgxjob_fetch_jobs(:w1, 10, now() + interval '1 hour')),
  :'tp', 'a timed job comes back with its trace context too'
);

select * from finish();
rollback;
