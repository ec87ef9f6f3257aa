-- pgxjob_worker_status: every worker with its group, heartbeat age, liveness (the reaper's rule)
-- and the number of jobs it holds in both hot tables.
begin;
\ir helpers.psql
select plan(7);

select t_setup();

select is_empty(
  'select * from pgxjob_worker_status()',
  'no worker: no rows'
);

select t_worker('g1') as w1 \gset
select t_worker('default', now() + interval '5 seconds') as w2 \gset

select results_eq(
  format('select worker_id, group_name, heartbeat_age, dead_after, alive, locked_jobs
          from pgxjob_worker_status(now() + interval ''10 seconds'') where worker_id = %s', :w1),
  format('values (%s, %L, interval %L, interval %L, true, 0::bigint)',
    :w1, 'g1', '10 seconds', '1 minute'),
  'a fresh worker is alive, with its group, heartbeat age and dead_after'
);

-- w1 claims one ASAP job and one due timed job: both count, from both tables.
select pgxjob_schedule('t1');
select pgxjob_schedule('t1');
select pgxjob_schedule('t1', run_at => now() + interval '1 second');
select count(*) from pgxjob_fetch_jobs(:w1, 2, now() + interval '2 seconds');

select is(
  (select locked_jobs from pgxjob_worker_status() where worker_id = :w1),
  2::bigint,
  'locked_jobs counts the jobs a worker holds in both hot tables'
);

select is(
  (select locked_jobs from pgxjob_worker_status() where worker_id = :w2),
  0::bigint,
  'another worker holds none of them'
);

select is(
  (select alive from pgxjob_worker_status(now() + interval '60 seconds') where worker_id = :w1),
  true,
  'a worker is alive until heartbeat_at + dead_after'
);

select is(
  (select alive from pgxjob_worker_status(now() + interval '61 seconds') where worker_id = :w1),
  false,
  'a worker is dead once heartbeat_at + dead_after has passed'
);

-- The reaper agrees: at the moment status calls w1 dead, reaping removes exactly it.
select pgxjob_reap_dead_workers(now() + interval '61 seconds');
select results_eq(
  'select worker_id from pgxjob_worker_status()',
  format('values (%s)', :w2),
  'the workers status calls dead are the ones the reaper deletes'
);

select * from finish();
rollback;
