-- pgxjob_worker_heartbeat(worker_id, now): records a heartbeat (reaping is separate) and tells a
-- reaped worker that it is gone.
begin;
\ir helpers.psql
select plan(13);

select t_setup();
select pgxjob_register_worker('g1', interval '1 minute') as w1 \gset
select pgxjob_register_worker('g1', interval '1 minute') as w2 \gset
select pgxjob_register_worker('g1', interval '10 minutes') as w_long \gset

select ok(pgxjob_worker_heartbeat(:w1, now() + interval '30 seconds'),
  'a live worker''s heartbeat returns true');
select is((select heartbeat_at from pgxjob_workers where id = :w1), now() + interval '30 seconds',
  'the heartbeat advances heartbeat_at to p_now');
select ok(pgxjob_worker_heartbeat(:w1, now()), 'an out-of-order heartbeat returns true');
select is((select heartbeat_at from pgxjob_workers where id = :w1), now() + interval '30 seconds',
  'heartbeat_at never moves backwards');

-- A heartbeat reaps nobody: reaping is a call of its own, in its own transaction.
select pgxjob_schedule('t1') as job \gset
select count(*) from pgxjob_fetch_jobs(:w2, 10);
select ok(pgxjob_worker_heartbeat(:w1, now() + interval '80 seconds'),
  'the heartbeating worker is alive');
select is((select count(*)::int from pgxjob_workers), 3, 'a heartbeat reaps no worker');
select is((select previous_heartbeat_at from pgxjob_workers where id = :w1),
  now() + interval '30 seconds', 'the heartbeat keeps the previous one, for the reaper');

-- w1 reaps as of its previous heartbeat (+30 s), when w2 (silent since 0, dead after a minute)
-- was still alive; after its next heartbeat (previous: +80 s) w2 is dead.
select is(pgxjob_reap_dead_workers(now() + interval '80 seconds', :w1), 0,
  'a reaper counts silence only up to its own previous heartbeat');
select pgxjob_worker_heartbeat(:w1, now() + interval '100 seconds');
select is(pgxjob_reap_dead_workers(now() + interval '100 seconds', :w1), 1,
  'a worker dead before the reaper''s previous heartbeat is reaped');
select results_eq('select id from pgxjob_workers order by id',
  format('values (%s), (%s)', :w1, :w_long),
  'only workers silent longer than their own dead_after are reaped');
select is(t_owner(:job), null, 'the reaped worker''s job is released');

select ok(not pgxjob_worker_heartbeat(:w2, now() + interval '80 seconds'),
  'a reaped worker''s heartbeat returns false');
select ok(not exists (select 1 from pgxjob_workers where id = :w2),
  'a reaped worker''s heartbeat does not bring it back');

select * from finish();
rollback;
