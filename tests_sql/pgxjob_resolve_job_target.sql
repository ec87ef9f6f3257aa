-- pgxjob_resolve_job_target(job_type, group_name): the lookup pgxjob_schedule and
-- pgxjob_schedule_many share.
begin;
\ir helpers.psql
select plan(6);

select t_setup();

select row_eq(
  $$select * from pgxjob_resolve_job_target('t1', null)$$,
  row((select id from pgxjob_job_types where name = 't1'),
      (select id from pgxjob_groups where name = 'g1'),
      'g1'::text),
  'a null group resolves to the type''s default group'
);
select row_eq(
  $$select * from pgxjob_resolve_job_target('t1', 'g2')$$,
  row((select id from pgxjob_job_types where name = 't1'),
      (select id from pgxjob_groups where name = 'g2'),
      'g2'::text),
  'a named group overrides the default group'
);
select throws_ok($$select pgxjob_resolve_job_target('nope', null)$$, 'PJ001',
  'pgxjob: unknown job type "nope"', 'an unknown type raises PJ001');
select throws_ok($$select pgxjob_resolve_job_target('t1', 'nope')$$, 'PJ002',
  'pgxjob: unknown group "nope"', 'an unknown group raises PJ002');
select throws_ok($$select pgxjob_resolve_job_target(null, null)$$, 'PJ003',
  'pgxjob: job type must not be null or empty', 'a null type raises PJ003');
select throws_ok($$select pgxjob_resolve_job_target('nope', 'also_nope')$$, 'PJ001',
  'pgxjob: unknown job type "nope"', 'an unknown type is reported before an unknown group');

select * from finish();
rollback;
