-- pgxjob_next_run_in(worker_id, now): how long until the group's next unowned timed job is due.
begin;
\ir helpers.psql
select plan(9);

select t_setup();
select t_worker('g1') as w \gset
select t_worker('g1') as w_other \gset

select is(pgxjob_next_run_in(:w), null, 'null when the group has no timed job');
select pgxjob_schedule('t1') as asap \gset
select is(pgxjob_next_run_in(:w), null, 'ASAP jobs do not count');

select pgxjob_schedule('t1', group_name => 'g2', run_at => now() + interval '1 minute');
select is(pgxjob_next_run_in(:w), null, 'another group''s timed jobs do not count');

select pgxjob_schedule('t1', null, null, now() + interval '10 minutes');
select pgxjob_schedule('t1', null, null, now() + interval '5 minutes') as soon \gset
select is(pgxjob_next_run_in(:w), interval '5 minutes', 'the interval to the earliest timed job');
select is(pgxjob_next_run_in(:w, now() + interval '7 minutes'), interval '-2 minutes',
  'negative when a job is overdue');

-- The ASAP job and the timed job due in 5 minutes (claimed in due-time order).
select count(*) from pgxjob_fetch_jobs(:w_other, 2, now() + interval '5 minutes');
select is(pgxjob_next_run_in(:w), interval '10 minutes', 'owned jobs do not count');

select is(pgxjob_next_run_in(-1), null, 'null for an unknown worker');

select pgxjob_schedule('t1', null, 'g2', 'infinity');
select t_worker('g2') as w_g2 \gset
select is(pgxjob_next_run_in(:w_g2), interval '1 minute',
  'a job at infinity never falls due and does not break the subtraction');
update pgxjob_run_at_jobs set next_run_at = '-infinity' where run_at = 'infinity';
select is(pgxjob_next_run_in(:w_g2), interval '0', 'a job at -infinity is due now');

select * from finish();
rollback;
