-- pgxjob_resume_group(group_name): a resumed group's fetches claim its jobs again.
begin;
\ir helpers.psql
select plan(6);

select t_setup();
select t_worker('g1') as w \gset
select pgxjob_schedule('t1') as asap \gset

select is(pgxjob_resume_group('g1'), false, 'resuming a running group changes nothing');
select pgxjob_pause_group('g1');
select is_empty(format('select id from pgxjob_fetch_jobs(%s, 10)', :w), 'paused: nothing');
select is(pgxjob_resume_group('g1'), true, 'resuming a paused group says it changed');
select is((select paused_at from pgxjob_groups where name = 'g1'), null, 'the pause is gone');
select results_eq(
  format('select id from pgxjob_fetch_jobs(%s, 10)', :w),
  format('values (%s::bigint)', :asap),
  'a fetch claims the group''s jobs again'
);
select throws_ok($$select pgxjob_resume_group('nope')$$, 'PJ002',
  'pgxjob: unknown group "nope"', 'an unknown group is an error naming it');

select * from finish();
rollback;
