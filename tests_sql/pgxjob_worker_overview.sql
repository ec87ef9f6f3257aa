-- pgxjob_worker_overview(now): every worker with host, pid, heartbeat age, state and jobs held.
begin;
\ir helpers.psql
select plan(3);

select t_setup();
select is_empty('select * from pgxjob_worker_overview()', 'no worker, no row');

-- The clock is a day ahead, so that the server's start time (a dead worker's grace) is long past.
select pgxjob_describe_worker(t_worker('g1', now() + interval '1 day'), 'host-a', 11) as alive
\gset
select t_worker('g2', now() + interval '1 day' - interval '2 minutes') as dead \gset
select pgxjob_schedule('t1') as job1 \gset
select pgxjob_schedule('t1') as job2 \gset
select pgxjob_schedule('t1', run_at => now() + interval '1 hour') as job3 \gset
select t_claim(:job1, :alive);
select t_claim(:job3, :alive);

select results_eq(
  $$select group_name, host, pid, heartbeat_age, state, jobs_held
    from pgxjob_worker_overview(now() + interval '1 day')$$,
  $$values ('g1', 'host-a'::text, 11, interval '0', 'alive'::text, 2::bigint),
           ('g2', null, null, interval '2 minutes', 'dead', 0)$$,
  'each worker: where it runs, how long it has been silent, its state and the jobs it holds'
);
select is(
  (select state from pgxjob_worker_overview(now() + interval '1 day 30 seconds')
   where worker_id = :alive),
  'stale', 'a worker silent for more than two heartbeat periods is stale');

select * from finish();
rollback;
