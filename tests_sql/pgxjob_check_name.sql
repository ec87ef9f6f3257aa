-- pgxjob_check_name(kind, name): the one check every registration and schedule applies to names.
begin;
select plan(8);

select lives_ok($$select pgxjob_check_name('group name', 'emails')$$, 'a plain name passes');
select lives_ok($$select pgxjob_check_name('group name', 'x''; drop table pgxjob_groups; --')$$,
  'quotes and semicolons are data');
select lives_ok(format('select pgxjob_check_name(%L, %L)', 'group name', repeat('é', 500)),
  '1000 bytes pass');
select throws_ok(format('select pgxjob_check_name(%L, %L)', 'group name', repeat('😀', 700)),
  'PJ003', 'pgxjob: group name is 2800 bytes long in UTF-8, more than 1000',
  'the limit is in bytes: 700 four-byte characters raise PJ003, not 54000 from the index');
select throws_ok(format('select pgxjob_register_job_type(%L)', repeat('😀', 700)),
  'PJ003', 'pgxjob: job type name is 2800 bytes long in UTF-8, more than 1000',
  'registering such a name raises PJ003 before the index sees it');
select throws_ok($$select pgxjob_check_name('group name', null)$$, 'PJ003',
  'pgxjob: group name must not be null or empty', 'null raises PJ003 naming the kind');
select throws_ok($$select pgxjob_check_name('job type', '')$$, 'PJ003',
  'pgxjob: job type must not be null or empty', 'empty raises PJ003');
select throws_ok(format('select pgxjob_check_name(%L, %L)', 'job type', repeat('x', 1001)), 'PJ003',
  'pgxjob: job type is 1001 bytes long in UTF-8, more than 1000', 'too long raises PJ003');

select * from finish();
rollback;
