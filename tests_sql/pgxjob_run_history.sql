-- pgxjob_run_history(since, bucket): runs per group, type and time bucket, by outcome.
begin;
\ir helpers.psql
select plan(4);

select t_setup();
create function t_run(p_job bigint, p_finished timestamptz, p_outcome text, p_error text)
returns void language sql as $$
  insert into pgxjob_job_runs (job_id, run_number, group_id, type_id, inserted_at, run_at,
    started_at, finished_at, error, outcome)
  select p_job, 1, t.default_group_id, t.id, p_finished, p_finished, p_finished, p_finished,
    p_error, p_outcome
  from pgxjob_job_types t where t.name = 't1'
$$;
select t_run(1, '2030-01-01 10:00:10+00', 'succeeded', null);
select t_run(2, '2030-01-01 10:00:50+00', 'succeeded', null);
select t_run(3, '2030-01-01 10:00:30+00', 'failed', 'boom');
select t_run(4, '2030-01-01 10:02:00+00', 'retried', 'again');
select t_run(5, '2030-01-01 10:02:01+00', 'cancelled', null);
select t_run(6, '2030-01-01 09:59:59+00', 'succeeded', null);

select results_eq(
  $$select group_name, job_type, bucket_at, succeeded, failed, retried, cancelled
    from pgxjob_run_history('2030-01-01 10:00:00+00', interval '1 minute')$$,
  $$values ('g1', 't1', '2030-01-01 10:00:00+00'::timestamptz, 2::bigint, 1::bigint, 0::bigint,
            0::bigint),
           ('g1', 't1', '2030-01-01 10:02:00+00', 0, 0, 1, 1)$$,
  'runs since `since` in one-minute buckets, empty buckets left out'
);
select is(
  (select sum(succeeded) from pgxjob_run_history('2030-01-01 09:00:00+00', interval '1 hour')),
  3::numeric, 'bucketed by the hour'
);
select throws_ok($$select * from pgxjob_run_history(now(), interval '0')$$, 'PJ005', null,
  'a bucket of zero is refused');
select throws_ok($$select * from pgxjob_run_history(null)$$, 'PJ005', null,
  'a null since is refused');

select * from finish();
rollback;
