-- pgxjob_group_id(name): the id of a registered group, or PJ002.
begin;
\ir helpers.psql
select plan(3);

select t_setup();
select is(pgxjob_public.pgxjob_group_id('default'), 1, 'the default group is 1');
select is(pgxjob_public.pgxjob_group_id('g1'), (select id from pgxjob_groups where name = 'g1'),
  'a registered group''s id');
select throws_ok($$select pgxjob_public.pgxjob_group_id('no such group')$$, 'PJ002',
  'pgxjob: unknown group "no such group"', 'an unknown group names it');

select * from finish();
rollback;
