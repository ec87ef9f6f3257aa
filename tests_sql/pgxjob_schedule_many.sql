-- pgxjob_schedule_many(job_type, params[], group_name, run_at): bulk enqueue in one statement.
begin;
\ir helpers.psql
select plan(20);

select t_setup();

create temp table t_ids as
select row_number() over () as n, id
from pgxjob_schedule_many('t1', array['{"n": 1}', null, '{"n": 3}']::json[]) as id;

select is((select count(*)::int from t_ids), 3, 'one id per element of params');
select is(
  (select array_agg(j.params::text order by i.n) from t_ids i join pgxjob_asap_jobs j using (id)),
  array['{"n": 1}', null, '{"n": 3}'],
  'ids come back in the order of params, each with its params'
);
select ok(
  (select bool_and(id > coalesce(prev, 0))
   from (select id, lag(id) over (order by n) as prev from t_ids) x),
  'ids increase in the order of params'
);
select is(
  (select array_agg(distinct g.name) from t_ids i join pgxjob_asap_jobs j using (id)
   join pgxjob_groups g on g.id = j.group_id),
  array['g1'],
  'jobs go to the type''s default group'
);

select is_empty(
  $$select * from pgxjob_schedule_many('t1', array[]::json[])$$,
  'an empty array schedules nothing'
);
select is_empty(
  $$select * from pgxjob_schedule_many('t1', null)$$,
  'a null array schedules nothing'
);

create temp table t_timed as
select id from pgxjob_schedule_many(
  't1', array['{}', '{}']::json[], group_name => 'g2', run_at => now() + interval '1 minute'
) as id;
select is(
  (select count(*)::int from pgxjob_run_at_jobs j join t_timed using (id)
   where j.run_at = now() + interval '1 minute'
     and j.next_run_at = j.run_at
     and j.group_id = (select id from pgxjob_groups where name = 'g2')),
  2,
  'a future run_at makes timed jobs in the named group'
);

create temp table t_past as
select id from pgxjob_schedule_many('t2', array['{}']::json[], run_at => now() - interval '1 s') as id;
select is((select t_job_table(id) from t_past), 'asap', 'a past run_at makes ASAP jobs');

select throws_ok($$select pgxjob_schedule_many('nope', array['{}']::json[])$$, 'PJ001',
  'pgxjob: unknown job type "nope"', 'an unknown type raises PJ001');
select throws_ok($$select pgxjob_schedule_many('nope', array[]::json[])$$, 'PJ001',
  'pgxjob: unknown job type "nope"', 'an unknown type raises PJ001 even with nothing to schedule');
select throws_ok($$select pgxjob_schedule_many('t1', array['{}']::json[], 'nope')$$, 'PJ002',
  'pgxjob: unknown group "nope"', 'an unknown group raises PJ002');
select throws_ok($$select pgxjob_schedule_many(null, array['{}']::json[])$$, 'PJ003',
  'pgxjob: job type must not be null or empty', 'a null type raises PJ003');
select throws_ok($$select pgxjob_schedule_many('t1', array['{bad']::json[])$$, '22P02', null,
  'an invalid JSON element raises 22P02');

-- Priority and unique keys
create temp table t_prio as
select id from pgxjob_schedule_many('t1', array['{}', '{}']::json[], priority => 4) as id;
select is(
  (select array_agg(priority order by id) from pgxjob_asap_jobs where id in (select id from t_prio)),
  array[4, 4], 'one priority for every job of the call'
);
select pgxjob_schedule('t1', unique_key => 'held') as held \gset
create temp table t_keyed as
select row_number() over () as n, id
from pgxjob_schedule_many('t1', array['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']::json[],
                          unique_keys => array['held', null, 'new', 'new']) as id;
select is((select id from t_keyed where n = 1), :held::bigint,
  'a key already held returns its job''s id in place');
select is((select id from t_keyed where n = 4), (select id from t_keyed where n = 3),
  'a key repeated within the call makes one job');
select throws_ok($$select pgxjob_schedule_many('t1', array['{}']::json[], unique_keys => array['a', 'b'])$$,
  'PJ005', null, 'unique_keys of another length than params raises PJ005');

-- Trace context: one for every job of the call, on every path.
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
create temp table t_traced as
select id from pgxjob_schedule_many('t1', array['{}', '{}']::json[], trace_context => :'tp') as id
union all
select id from pgxjob_schedule_many('t1', array['{}']::json[], run_at => now() + interval '1 hour',
                                    trace_context => :'tp') as id
union all
select id from pgxjob_schedule_many('t1', array['{}']::json[], unique_keys => array['traced'],
                                    trace_context => :'tp') as id;
select is(
  (select array_agg(j.trace_context) from pgxjob_asap_jobs j join t_traced using (id)),
  array[:'tp', :'tp', :'tp'], 'ASAP jobs of one call share its trace context, keyed ones too');
select is(
  (select array_agg(j.trace_context) from pgxjob_run_at_jobs j join t_traced using (id)),
  array[:'tp'], 'timed jobs keep it');
select throws_ok(
  $$select pgxjob_schedule_many('t1', array['{}']::json[], trace_context => '00-x')$$, 'PJ005',
  null, 'a malformed trace context raises PJ005 and schedules nothing');

select * from finish();
rollback;
