-- pgxjob_group_overview(now): per group, paused or not, the oldest unclaimed due job and the
-- workers alive, stale and dead.
begin;
\ir helpers.psql
select plan(7);

select t_setup();
select results_eq(
  $$select group_name, paused_at, oldest_due_at, workers_alive, workers_stale, workers_dead
    from pgxjob_group_overview()$$,
  $$values ('default', null::timestamptz, null::timestamptz, 0, 0, 0),
           ('g1', null, null, 0, 0, 0), ('g2', null, null, 0, 0, 0)$$,
  'every group, idle'
);

-- Workers that die after a minute: stale after 24 s of silence, dead after 60 s. The clock is a
-- day ahead, so that the server's start time (a dead worker's grace) is long past.
select t_worker('g1', now() + interval '1 day') as alive \gset
select t_worker('g1', now() + interval '1 day' - interval '30 seconds') as stale \gset
select t_worker('g1', now() + interval '1 day' - interval '2 minutes') as dead \gset
select results_eq(
  $$select workers_alive, workers_stale, workers_dead
    from pgxjob_group_overview(now() + interval '1 day')
    where group_name = 'g1'$$,
  $$values (1, 1, 1)$$,
  'workers are alive, stale (two heartbeat periods missed) or dead (past dead_after)'
);

-- The oldest due job: an ASAP job of a lower priority inserted first, a higher one later, a
-- timed job due earlier still.
insert into pgxjob_asap_jobs (group_id, type_id, inserted_at, priority)
select g.id, t.id, now() - interval '5 minutes', 0
from pgxjob_groups g, pgxjob_job_types t where g.name = 'g1' and t.name = 't1';
insert into pgxjob_asap_jobs (group_id, type_id, inserted_at, priority)
select g.id, t.id, now() - interval '1 minute', 9
from pgxjob_groups g, pgxjob_job_types t where g.name = 'g1' and t.name = 't1';
select is((select oldest_due_at from pgxjob_group_overview() where group_name = 'g1'),
  now() - interval '5 minutes', 'the oldest ASAP job of any priority');
select pgxjob_schedule('t1', run_at => now() + interval '1 minute');
select is((select oldest_due_at from pgxjob_group_overview(now() + interval '10 minutes')
           where group_name = 'g1'),
  now() - interval '5 minutes', 'a timed job due later than it does not count');
select pgxjob_schedule('t1', group_name => 'g2', run_at => now() + interval '1 minute');
select is((select oldest_due_at from pgxjob_group_overview(now() + interval '10 minutes')
           where group_name = 'g2'),
  now() + interval '1 minute', 'a due timed job counts from its due time');
select is((select oldest_due_at from pgxjob_group_overview() where group_name = 'g2'),
  null, 'a timed job not due yet does not count');

select pgxjob_pause_group('g2');
select isnt((select paused_at from pgxjob_group_overview() where group_name = 'g2'), null,
  'a paused group says since when');

select * from finish();
rollback;
