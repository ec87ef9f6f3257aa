-- pgxjob_pause_group(group_name): a paused group's fetches claim nothing, its periodic schedules
-- do not fire, and its idle workers are told there is nothing to wait for.
begin;
\ir helpers.psql
select plan(10);

select t_setup();
select t_worker('g1') as w \gset
select t_worker('g2') as w2 \gset
select pgxjob_schedule('t1') as asap \gset
select pgxjob_schedule('t1', run_at => now() + interval '1 minute') as timed \gset
select pgxjob_schedule('t1', group_name => 'g2') as other \gset
select pgxjob_schedule_periodic('every_minute', '* * * * *', 't1');

select is(pgxjob_pause_group('g1'), true, 'pausing a running group says it changed');
select isnt((select paused_at from pgxjob_groups where name = 'g1'), null,
  'the group records when it was paused');
select is(pgxjob_pause_group('g1'), false, 'pausing a paused group again changes nothing');

select is_empty(
  format('select id from pgxjob_fetch_jobs(%s, 10, now() + interval ''2 minutes'')', :w),
  'a fetch of a paused group claims nothing, due timed jobs included'
);
select is((select last_job_id from pgxjob_periodic_jobs where name = 'every_minute'), null,
  'a paused group''s periodic schedule does not fire');
select is(pgxjob_next_run_in(:w, now() + interval '2 minutes'), null,
  'a paused group''s workers have nothing to wait for, though a timed job is due');
select is(t_owner(:asap), null, 'its jobs stay unclaimed');

select results_eq(
  format('select id from pgxjob_fetch_jobs(%s, 10)', :w2),
  format('values (%s::bigint)', :other),
  'another group is not paused'
);

select throws_ok($$select pgxjob_pause_group('nope')$$, 'PJ002',
  'pgxjob: unknown group "nope"', 'an unknown group is an error naming it');
select throws_ok($$select pgxjob_pause_group(null)$$, 'PJ002', null,
  'a null group is an unknown group');

select * from finish();
rollback;
