-- pgxjob_register_group(name): idempotent insert-or-select of a group.
begin;
\ir helpers.psql
select plan(10);

select is(pgxjob_register_group('default'), 1, 'registering default returns its id, 1');

select isnt(pgxjob_register_group('emails'), null, 'a new group gets an id');
select is(
  pgxjob_register_group('emails'),
  (select id from pgxjob_groups where name = 'emails'),
  'registering an existing group returns its id'
);
select is((select count(*)::int from pgxjob_groups where name = 'emails'), 1,
  'registering twice leaves one row');

select pgxjob_register_group(name => 'named') as named_id \gset
select is(
  (select name from pgxjob_groups where id = :named_id),
  'named',
  'named notation works'
);

select pgxjob_register_group($$it's; drop table x; -- "ü ☃"$$) as odd_id \gset
select is(
  (select name from pgxjob_groups where id = :odd_id),
  $$it's; drop table x; -- "ü ☃"$$,
  'quotes, semicolons and unicode in a name are stored as data'
);

select throws_ok($$select pgxjob_register_group(null)$$, 'PJ003',
  'pgxjob: group name must not be null or empty', 'a null name raises PJ003');
select throws_ok($$select pgxjob_register_group('')$$, 'PJ003',
  'pgxjob: group name must not be null or empty', 'an empty name raises PJ003');

select is((select count(*)::int from pgxjob_groups where name = ''), 0,
  'no empty-named group was created');

select throws_ok(format('select pgxjob_register_group(%L)', repeat('x', 1001)), 'PJ003', null,
  'a name longer than 1000 characters raises PJ003');

select * from finish();
rollback;
