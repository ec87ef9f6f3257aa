-- pgxjob_worker_heartbeat(worker_id, now): records a heartbeat, reaps dead workers, and tells a
-- reaped worker that it is gone.
begin;
\ir helpers.psql
select plan(9);

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

-- w1 at +80s: w2 (silent since now, dead after one minute) is reaped; w1 (last seen at +30s) lives.
select pgxjob_schedule('t1') as job \gset
select count(*) from pgxjob_fetch_jobs(:w2, 10);
select ok(pgxjob_worker_heartbeat(:w1, now() + interval '80 seconds'),
  'the heartbeating worker is alive');
select results_eq('select id from pgxjob_workers order by id',
  format('values (%s), (%s)', :w1, :w_long),
  'a heartbeat reaps workers silent longer than their own dead_after, and no other');
select is(t_owner(:job), null, 'the reaped worker''s job is released');

select ok(not pgxjob_worker_heartbeat(:w2, now() + interval '80 seconds'),
  'a reaped worker''s heartbeat returns false');
select ok(not exists (select 1 from pgxjob_workers where id = :w2),
  'a reaped worker''s heartbeat does not bring it back');

select * from finish();
rollback;
