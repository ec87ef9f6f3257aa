-- pgxjob_schedule(job_type, params, group_name, run_at): the public enqueue function.
-- NOTIFY delivery needs a commit, so tests/test_notify.py covers it.
begin;
\ir helpers.psql
select plan(42);

select t_setup();

-- ASAP, with every argument defaulted but the type.
select pgxjob_schedule('t1') as asap_id \gset
select ok(:asap_id > 0, 'pgxjob_schedule returns the new job id');
select is(t_job_table(:asap_id), 'asap', 'a job without run_at is an ASAP job');
select row_eq(
  format('select group_id, type_id, worker_id, params::text, inserted_at
          from pgxjob_asap_jobs where id = %s', :asap_id),
  row((select id from pgxjob_groups where name = 'g1'),
      (select id from pgxjob_job_types where name = 't1'),
      null::int, null::text, now()),
  'the ASAP row has the type''s default group, the type, no owner, null params, now()'
);

select pgxjob_schedule('t1', '{"b": 1,  "a": [2]}') as params_id \gset
select is(
  (select params::text from pgxjob_asap_jobs where id = :params_id),
  '{"b": 1,  "a": [2]}',
  'params are stored as json, byte for byte'
);
select ok(
  (select json_typeof(params) from pgxjob_asap_jobs where id = :params_id) = 'object',
  'params are json values'
);
select pgxjob_schedule('t1', '[1, 2]'::json) as array_id \gset
select is((select params::text from pgxjob_asap_jobs where id = :array_id), '[1, 2]',
  'a json value (not only a literal) is accepted');

select pgxjob_schedule('t2', params => '{}', run_at => null) as null_run_at_id \gset
select is(t_job_table(:null_run_at_id), 'asap', 'a null run_at is ASAP');
select is(
  (select group_id from pgxjob_asap_jobs where id = :null_run_at_id), 1,
  'a type registered with the default group schedules into default (id 1)'
);

select pgxjob_schedule('t1', null, null, now() - interval '1 hour') as past_id \gset
select is(t_job_table(:past_id), 'asap', 'a run_at in the past is ASAP');
select pgxjob_schedule('t1', null, null, now()) as now_id \gset
select is(t_job_table(:now_id), 'asap', 'a run_at of now() is ASAP');

-- Timed
select pgxjob_schedule('t1', '{"x": 1}', null, now() + interval '1 hour') as timed_id \gset
select is(t_job_table(:timed_id), 'run_at', 'a run_at in the future makes a timed job');
select row_eq(
  format('select run_at, next_run_at, group_id, type_id, worker_id, error_count, last_error,
                 params::text, inserted_at
          from pgxjob_run_at_jobs where id = %s', :timed_id),
  row(now() + interval '1 hour', now() + interval '1 hour',
      (select id from pgxjob_groups where name = 'g1'),
      (select id from pgxjob_job_types where name = 't1'),
      null::int, 0, null::text, '{"x": 1}'::text, now()),
  'the timed row: run_at = next_run_at, no owner, no errors, params, inserted now()'
);
select isnt(:timed_id::bigint, :asap_id::bigint, 'ASAP and timed jobs draw distinct ids');
select ok(:timed_id > :past_id, 'both tables share one increasing id sequence');

-- Group override and named notation
select pgxjob_schedule('t1', group_name => 'g2') as g2_id \gset
select is(
  (select g.name from pgxjob_asap_jobs j join pgxjob_groups g on g.id = j.group_id
   where j.id = :g2_id),
  'g2', 'group_name overrides the type''s default group'
);
select pgxjob_schedule(job_type => 't1') as named_id \gset
select is(t_job_table(:named_id), 'asap', 'pgxjob_schedule(job_type => ...) makes an ASAP job');
select pgxjob_schedule(run_at => now() + interval '1 day', job_type => 't2') as named_timed_id \gset
select is(
  (select run_at from pgxjob_run_at_jobs where id = :named_timed_id),
  now() + interval '1 day',
  'named notation in any order with run_at makes a timed job'
);

-- Names are data
select pgxjob_register_group($$g'; drop table pgxjob_groups; --$$);
select pgxjob_register_job_type($$t "ü☃"; select 1; 'x'$$, $$g'; drop table pgxjob_groups; --$$);
select pgxjob_schedule($$t "ü☃"; select 1; 'x'$$) as odd_id \gset
select is(
  (select g.name || '|' || t.name
   from pgxjob_asap_jobs j
   join pgxjob_groups g on g.id = j.group_id
   join pgxjob_job_types t on t.id = j.type_id
   where j.id = :odd_id),
  $$g'; drop table pgxjob_groups; --|t "ü☃"; select 1; 'x'$$,
  'type and group names with quotes, semicolons and unicode are data'
);
select has_table('pgxjob_groups', 'the table in a group name was not dropped');

-- Errors
select throws_ok($$select pgxjob_schedule('nope')$$, 'PJ001',
  'pgxjob: unknown job type "nope"', 'an unknown type raises PJ001 naming it');
select throws_ok($$select pgxjob_schedule('nope', run_at => now() + interval '1 hour')$$,
  'PJ001', 'pgxjob: unknown job type "nope"', 'an unknown type raises PJ001 for a timed job too');
select throws_ok($$select pgxjob_schedule($x$n'o"pe;$x$)$$, 'PJ001',
  $$pgxjob: unknown job type "n'o"pe;"$$, 'an unknown odd name is reported as it is');
select throws_ok($$select pgxjob_schedule('t1', group_name => 'nope')$$, 'PJ002',
  'pgxjob: unknown group "nope"', 'an unknown group raises PJ002 naming it');
select throws_ok($$select pgxjob_schedule('t1', group_name => '')$$, 'PJ003',
  'pgxjob: group name must not be null or empty', 'an empty group name is not a name');
select throws_ok($$select pgxjob_schedule(null)$$, 'PJ003',
  'pgxjob: job type must not be null or empty', 'a null type raises PJ003');
select throws_ok($$select pgxjob_schedule('')$$, 'PJ003',
  'pgxjob: job type must not be null or empty', 'an empty type raises PJ003');
select throws_ok($$select pgxjob_schedule('t1', '{bad')$$, '22P02', null,
  'invalid JSON params raise 22P02 before the function runs');
select throws_ok($$select pgxjob_schedule('t1', '{}'::jsonb)$$, '42883', null,
  'a jsonb value needs an explicit ::json cast');
select lives_ok($$select pgxjob_schedule('t1', '{}'::jsonb::json)$$,
  'a jsonb value cast to json is accepted');

select is(
  (select count(*)::int from pgxjob_asap_jobs), 10,
  'every successful ASAP call added exactly one ASAP row'
);
select is(
  (select count(*)::int from pgxjob_run_at_jobs), 2,
  'every successful timed call added exactly one timed row'
);

-- The error carries a hint that says how to register the type.
create function t_hint_of(p_sql text)
returns text
language plpgsql
as $$
declare
  v_hint text;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics v_hint = pg_exception_hint;
  return v_hint;
end;
$$;
select matches(
  t_hint_of($$select pgxjob_schedule('nope')$$),
  $$pgxjob_register_job_type\('nope', 'default'\)$$,
  'the PJ001 hint says how to register the type'
);
select matches(
  t_hint_of($$select pgxjob_schedule('t1', group_name => 'nope')$$),
  $$pgxjob_register_group\('nope'\)$$,
  'the PJ002 hint says how to register the group'
);

-- Trace context: the traceparent of the context that scheduled the job, kept with it.
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
select pgxjob_schedule('t1', trace_context => :'tp') as traced_id \gset
select is((select trace_context from pgxjob_asap_jobs where id = :traced_id), :'tp',
  'an ASAP job keeps its trace context');
select pgxjob_schedule('t1', null, null, now() + interval '1 hour', 0, null, :'tp') as traced_timed \gset
select is((select trace_context from pgxjob_run_at_jobs where id = :traced_timed), :'tp',
  'a timed job keeps its trace context (positional seventh argument)');
select is((select trace_context from pgxjob_asap_jobs where id = :asap_id), null,
  'a job scheduled without one has none');
select throws_ok(
  $$select pgxjob_schedule('t1', trace_context => 'not-a-traceparent')$$, 'PJ005',
  'pgxjob: trace_context ''not-a-traceparent'' is not a W3C traceparent',
  'a malformed trace context raises PJ005 naming it');
select throws_ok(
  format('select pgxjob_schedule(%L, trace_context => %L)', 'nope', :'tp'), 'PJ001', null,
  'an unknown type is reported before the trace context is looked at');
select is(
  (select count(*)::int from pgxjob_asap_jobs where trace_context is not null), 1,
  'the refused calls wrote nothing');

-- The common job (due now, no unique key) is written by pgxjob_schedule itself; a keyed or timed
-- job goes through pgxjob_insert_job.
set local track_functions = 'all';
select coalesce(pg_stat_get_xact_function_calls('pgxjob_insert_job'::regproc), 0) as inserts \gset
select pgxjob_schedule('t1', '{"fast": 1}');
select pgxjob_schedule('t1', '{"fast": 2}', 'g2', now() - interval '1 hour', 5,
                       trace_context => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
select is(coalesce(pg_stat_get_xact_function_calls('pgxjob_insert_job'::regproc), 0)
          - :inserts, 0::bigint, 'an ASAP job without a key takes no nested call');
select results_eq(
  $$select g.name, a.priority, a.trace_context from pgxjob_asap_jobs a
    join pgxjob_groups g on g.id = a.group_id where a.params::text like '{"fast"%'
    order by a.id$$,
  $$values ('g1'::text, 0, null::text),
           ('g2', 5, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')$$,
  'and writes the group, priority and trace context it was given'
);
select pgxjob_schedule('t1', null, null, null, 0, 'fast-key');
select pgxjob_schedule('t1', null, null, now() + interval '1 hour');
select is(coalesce(pg_stat_get_xact_function_calls('pgxjob_insert_job'::regproc), 0)
          - :inserts, 2::bigint, 'a keyed job and a timed job go through pgxjob_insert_job');

select * from finish();
rollback;
