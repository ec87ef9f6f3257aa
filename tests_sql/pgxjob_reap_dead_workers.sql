-- pgxjob_reap_dead_workers(now): deletes workers silent longer than their own dead_after and
-- releases their jobs.
begin;
\ir helpers.psql
select plan(10);

select t_setup();
-- Per-worker dead_after: one minute for the first, an hour for the second.
select pgxjob_register_worker('g1', interval '1 minute') as short \gset
select pgxjob_register_worker('g1', interval '1 hour') as long \gset
select pgxjob_register_worker('g2', interval '1 minute') as other \gset

select pgxjob_schedule('t1') as asap \gset
select pgxjob_schedule('t1', null, null, now() + interval '1 second') as timed \gset
select count(*) from pgxjob_fetch_jobs(:short, 10, now() + interval '1 second');
select is(t_owner(:asap), :short, 'the short-lived worker owns the ASAP job');
select is(t_owner(:timed), :short, 'the short-lived worker owns the timed job');

select is(pgxjob_reap_dead_workers(now() + interval '1 minute'), 0,
  'a worker silent for exactly its dead_after is not reaped yet');
select is(pgxjob_reap_dead_workers(now() + interval '61 seconds'), 2,
  'returns how many workers were reaped');
select results_eq('select id from pgxjob_workers',
  format('values (%s)', :long),
  'workers silent longer than their own dead_after are gone; the long-lived one stays');
select is(t_owner(:asap), null, 'reaping releases the dead worker''s ASAP job');
select is(t_owner(:timed), null, 'reaping releases the dead worker''s timed job');
select is(t_job_table(:asap), 'asap', 'the released job is kept');

select is(pgxjob_reap_dead_workers(now() + interval '61 seconds'), 0,
  'reaping again finds nothing');
select is(pgxjob_reap_dead_workers(now() + interval '2 hours'), 1,
  'the long-lived worker is reaped after its own dead_after');

select * from finish();
rollback;
