-- pgxjob_register_worker(group_name, dead_after, now): adds a worker row; reaps nobody.
begin;
\ir helpers.psql
select plan(13);

select t_setup();

select pgxjob_register_worker('g1', interval '5 minutes', now() - interval '1 hour') as w \gset
select row_eq(
  format('select group_id, inserted_at, heartbeat_at, dead_after from pgxjob_workers where id = %s', :w),
  row((select id from pgxjob_groups where name = 'g1'),
      now() - interval '1 hour', now() - interval '1 hour', interval '5 minutes'),
  'the worker row has its group, p_now as inserted_at and heartbeat_at, and its dead_after'
);

select pgxjob_register_worker(p_group_name => 'default', p_dead_after => interval '1 minute') as w_default \gset
select is(
  (select heartbeat_at from pgxjob_workers where id = :w_default), now(),
  'p_now defaults to now(); named notation works'
);
select is(
  (select count(*)::int from pgxjob_workers where id = :w), 1,
  'registering reaps nobody: a worker starting after an outage must not take the others for dead'
);

select pgxjob_register_worker('g1', interval '5 minutes') as w2 \gset
select isnt(:w2, :w_default, 'each registration makes a new worker');
select is((select count(*)::int from pgxjob_workers), 3, 'every worker remains');

select throws_ok($$select pgxjob_register_worker('nope', interval '1 minute')$$, 'PJ002',
  'pgxjob: unknown group "nope"', 'an unknown group raises PJ002');
select throws_ok($$select pgxjob_register_worker(null, interval '1 minute')$$, 'PJ003', null,
  'a null group name raises PJ003');
select throws_ok($$select pgxjob_register_worker('', interval '1 minute')$$, 'PJ003', null,
  'an empty group name raises PJ003');
select throws_ok($$select pgxjob_register_worker('g1', null)$$, 'PJ005', null,
  'a null dead_after raises PJ005');
select throws_ok($$select pgxjob_register_worker('g1', interval '0')$$, 'PJ005', null,
  'a zero dead_after raises PJ005');
select throws_ok($$select pgxjob_register_worker('g1', interval '-1 second')$$, 'PJ005', null,
  'a negative dead_after raises PJ005');

select throws_ok($$select pgxjob_register_worker('g1', interval '2 years')$$, 'PJ005', null,
  'a dead_after over a year raises PJ005');
select throws_ok($$select pgxjob_register_worker('g1', interval '1 minute', 'infinity')$$, 'PJ005',
  null, 'an infinite p_now raises PJ005');

select * from finish();
rollback;
