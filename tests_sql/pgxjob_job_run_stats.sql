-- pgxjob_job_run_stats(since): run-log outcomes per group and type since a time: succeeded,
-- retried (the job ran again or waits for a retry), failed for good, durations and first wait.
begin;
\ir helpers.psql
select plan(6);

select t_setup();
select t_worker('g1') as w \gset

-- Job a succeeds at once. Job b fails with a retry, then succeeds. Job c fails with a retry and
-- is still waiting. Job d fails for good.
select pgxjob_schedule('t1') as a \gset
select pgxjob_schedule('t1') as b \gset
select pgxjob_schedule('t1') as c \gset
select pgxjob_schedule('t1') as d \gset
select count(*) from pgxjob_fetch_jobs(:w, 10);
select t_record(:a);
select t_record(:b, p_error => 'flaky', p_retry_at => now());
select t_record(:c, p_error => 'flaky', p_retry_at => now() + interval '1 hour');
select t_record(:d, p_error => 'broken');
select count(*) from pgxjob_fetch_jobs(:w, 10);
select t_record(:b, p_error_count => 1);

select results_eq(
  $$ select group_name, job_type, runs, succeeded, retried, failed
     from pgxjob_job_run_stats(now() - interval '1 minute') $$,
  $$ values ('g1', 't1', 5::bigint, 2::bigint, 2::bigint, 1::bigint) $$,
  'runs split into succeeded, retried (ran again or still waiting) and failed for good'
);

select is(
  (select avg_duration from pgxjob_job_run_stats(now() - interval '1 minute')),
  interval '1 second',
  'avg_duration is the mean of finished_at - started_at'
);

select is(
  (select p95_duration from pgxjob_job_run_stats(now() - interval '1 minute')),
  interval '1 second',
  'p95_duration is the 95th percentile of run durations'
);

select is(
  (select avg_wait from pgxjob_job_run_stats(now() - interval '1 minute')),
  interval '-2 seconds',
  'avg_wait is started_at - run_at over first attempts only'
);

select is_empty(
  $$ select * from pgxjob_job_run_stats(now() + interval '1 minute') $$,
  'runs that finished before since are not counted'
);

-- A run logged in another group and type gets its own row.
select t_worker('default') as w2 \gset
select pgxjob_schedule('t2') as e \gset
select count(*) from pgxjob_fetch_jobs(:w2, 10);
select t_record(:e);
select results_eq(
  $$ select group_name, job_type, runs from pgxjob_job_run_stats(now() - interval '1 minute') $$,
  $$ values ('default', 't2', 1::bigint), ('g1', 't1', 5::bigint) $$,
  'one row per group and type'
);

select * from finish();
rollback;
