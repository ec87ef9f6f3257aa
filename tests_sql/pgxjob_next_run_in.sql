-- pgxjob_next_run_in(worker_id, now): how long until the group's next unowned timed job is due.
begin;
\ir helpers.psql
select plan(7);

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

select count(*) from pgxjob_fetch_jobs(:w_other, 1, now() + interval '5 minutes');
select is(pgxjob_next_run_in(:w), interval '10 minutes', 'owned jobs do not count');

select is(pgxjob_next_run_in(-1), null, 'null for an unknown worker');

select * from finish();
rollback;
