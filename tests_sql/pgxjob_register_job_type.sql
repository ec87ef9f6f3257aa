-- pgxjob_register_job_type(name, default_group_name): idempotent; a re-registration moves the
-- type to its new default group.
begin;
\ir helpers.psql
select plan(12);

select pgxjob_register_group('g1');

select isnt(pgxjob_register_job_type('send_email'), null, 'a new type gets an id');
select is(
  (select default_group_id from pgxjob_job_types where name = 'send_email'), 1,
  'the default group defaults to default (id 1)'
);
select is(
  pgxjob_register_job_type('send_email', 'default'),
  (select id from pgxjob_job_types where name = 'send_email'),
  'registering an existing type returns its id'
);
select is(
  pgxjob_register_job_type('send_email', 'g1'),
  (select id from pgxjob_job_types where name = 'send_email'),
  'registering with another default group keeps the id'
);
select is(
  (select g.name from pgxjob_job_types t join pgxjob_groups g on g.id = t.default_group_id
   where t.name = 'send_email'),
  'g1',
  'a re-registration moves the type to its new default group'
);
select is((select count(*)::int from pgxjob_job_types where name = 'send_email'), 1,
  'registering three times leaves one row');

select pgxjob_register_job_type('null_group', null);
select is(
  (select default_group_id from pgxjob_job_types where name = 'null_group'), 1,
  'a null default group means default'
);

select pgxjob_register_job_type(default_group_name => 'g1', name => 'named') as named_id \gset
select is(
  (select g.name from pgxjob_job_types t join pgxjob_groups g on g.id = t.default_group_id
   where t.id = :named_id),
  'g1',
  'named notation works'
);

select throws_ok($$select pgxjob_register_job_type('x', 'nope')$$, 'PJ002',
  'pgxjob: unknown group "nope" for job type "x"', 'an unknown default group raises PJ002');
select throws_ok($$select pgxjob_register_job_type(null)$$, 'PJ003',
  'pgxjob: job type name must not be null or empty', 'a null name raises PJ003');
select throws_ok($$select pgxjob_register_job_type('', 'default')$$, 'PJ003',
  'pgxjob: job type name must not be null or empty', 'an empty name raises PJ003');
select is((select count(*)::int from pgxjob_job_types where name in ('x', '')), 0,
  'failed registrations create no type');

select * from finish();
rollback;
