-- pgxjob_status(recent_failures, p_now): the json document behind `pgxjob status`.
begin;
\ir helpers.psql
select plan(9);

select is(
  pgxjob_status()::jsonb - 'now' - 'schema_version',
  '{"jobs": [], "workers": [], "recent_failures": []}'::jsonb,
  'an idle database has empty lists, not nulls'
);

select t_setup();
select t_worker('g1', now() - interval '15 seconds') as w \gset
select pgxjob_schedule('t1') as a \gset
select pgxjob_schedule('t1') as b \gset
select pgxjob_schedule('t2', run_at => now() + interval '1 hour');
select count(*) from pgxjob_fetch_jobs(:w, 1);
select t_record(:a, p_error => 'card declined');

select pgxjob_status() as doc \gset

select is(
  (:'doc'::json ->> 'schema_version')::int,
  (select max(version) from pgxjob_schema_migrations),
  'schema_version is the applied migration version'
);

select is(
  (:'doc'::json ->> 'now')::timestamptz,
  now(),
  'now is the database clock (p_now)'
);

select results_eq(
  $$ select j ->> 'group_name', j ->> 'job_type', (j ->> 'due')::int, (j ->> 'scheduled')::int
     from json_array_elements(pgxjob_status() -> 'jobs') j $$,
  $$ values ('default', 't2', 0, 1), ('g1', 't1', 1, 0) $$,
  'jobs holds pgxjob_job_counts, one object per group and type'
);

select ok(
  (select (j ->> 'lag_seconds')::float >= 0
   from json_array_elements(pgxjob_status() -> 'jobs') j
   where j ->> 'job_type' = 't1'),
  'lag_seconds is how long the oldest due job has waited'
);

select results_eq(
  $$ select (w ->> 'worker_id')::int, w ->> 'group_name', (w ->> 'heartbeat_age_seconds')::float,
       (w ->> 'dead_after_seconds')::float, (w ->> 'alive')::boolean
     from json_array_elements(pgxjob_status() -> 'workers') w $$,
  format('values (%s, %L, 15::float, 60::float, true)', :w, 'g1'),
  'workers holds pgxjob_worker_status with ages in seconds'
);

select results_eq(
  $$ select (f ->> 'job_id')::bigint, f ->> 'job_type', f ->> 'error'
     from json_array_elements(pgxjob_status() -> 'recent_failures') f $$,
  format('values (%s::bigint, %L, %L)', :a, 't1', 'card declined'),
  'recent_failures holds the newest failed runs'
);

select is(
  json_array_length(pgxjob_status(recent_failures => 0) -> 'recent_failures'),
  0,
  'recent_failures => 0 leaves the failures out'
);

select is(
  (select (w ->> 'alive')::boolean
   from json_array_elements(pgxjob_status(p_now => now() + interval '1 minute') -> 'workers') w),
  false,
  'p_now moves the clock'
);

select * from finish();
rollback;
