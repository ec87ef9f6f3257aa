-- The schema contract: tables, columns, indexes, constraints and function signatures that
-- users, triggers and the Python package rely on.
begin;
\ir helpers.psql
select plan(47);

-- Tables
select results_eq(
  $$select c.relname::text collate "default" from pg_class c
    where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and c.relname like 'pgxjob\_%'
    order by 1$$,
  array['pgxjob_asap_jobs', 'pgxjob_groups', 'pgxjob_job_runs', 'pgxjob_job_types',
        'pgxjob_run_at_jobs', 'pgxjob_schema_migrations', 'pgxjob_workers'],
  'pgxjob has exactly its seven tables'
);

select columns_are('pgxjob_groups', array['id', 'name']);
select columns_are('pgxjob_job_types', array['id', 'name', 'default_group_id']);
select columns_are('pgxjob_workers',
  array['id', 'group_id', 'inserted_at', 'heartbeat_at', 'dead_after']);
select columns_are('pgxjob_asap_jobs',
  array['id', 'inserted_at', 'group_id', 'type_id', 'worker_id', 'params']);
select columns_are('pgxjob_run_at_jobs',
  array['id', 'inserted_at', 'run_at', 'next_run_at', 'group_id', 'type_id', 'worker_id',
        'error_count', 'last_error', 'params']);
select columns_are('pgxjob_job_runs',
  array['job_id', 'run_number', 'group_id', 'type_id', 'inserted_at', 'run_at', 'started_at',
        'finished_at', 'params', 'error']);

select col_type_is('pgxjob_asap_jobs', 'id', 'bigint', 'job ids are bigint');
select col_type_is('pgxjob_asap_jobs', 'params', 'json', 'ASAP params are json, not jsonb');
select col_type_is('pgxjob_run_at_jobs', 'params', 'json', 'timed params are json, not jsonb');
select col_type_is('pgxjob_job_runs', 'params', 'json', 'logged params are json');
select col_type_is('pgxjob_asap_jobs', 'group_id', 'integer', 'hot tables store int group ids');
select col_type_is('pgxjob_run_at_jobs', 'type_id', 'integer', 'hot tables store int type ids');

-- Both hot tables share one id sequence, so a retried ASAP job keeps its id.
select has_sequence('pgxjob_job_id_seq');
select col_default_is('pgxjob_asap_jobs', 'id', $$nextval('pgxjob_job_id_seq'::regclass)$$);
select col_default_is('pgxjob_run_at_jobs', 'id', $$nextval('pgxjob_job_id_seq'::regclass)$$);

select col_is_pk('pgxjob_job_runs', array['job_id', 'run_number'],
  'the run log is keyed by (job_id, run_number)');

-- Foreign keys: worker_id releases jobs on worker deletion; no FK to groups/types on hot tables.
select fk_ok('pgxjob_asap_jobs', 'worker_id', 'pgxjob_workers', 'id');
select fk_ok('pgxjob_run_at_jobs', 'worker_id', 'pgxjob_workers', 'id');
select results_eq(
  $$select conrelid::regclass::text, confdeltype::text from pg_constraint
    where contype = 'f' and conrelid in ('pgxjob_asap_jobs'::regclass, 'pgxjob_run_at_jobs'::regclass)
    order by 1$$,
  $$values ('pgxjob_asap_jobs', 'n'), ('pgxjob_run_at_jobs', 'n')$$,
  'the hot tables have one foreign key each, to workers, on delete set null'
);

-- Indexes
select indexes_are('pgxjob_asap_jobs',
  array['pgxjob_asap_jobs_pkey', 'pgxjob_asap_jobs_fetch_idx', 'pgxjob_asap_jobs_worker_id_idx']);
select indexes_are('pgxjob_run_at_jobs',
  array['pgxjob_run_at_jobs_pkey', 'pgxjob_run_at_jobs_fetch_idx',
        'pgxjob_run_at_jobs_worker_id_idx']);
select has_index('pgxjob_asap_jobs', 'pgxjob_asap_jobs_worker_id_idx', array['worker_id']);
select has_index('pgxjob_run_at_jobs', 'pgxjob_run_at_jobs_worker_id_idx', array['worker_id']);
select is(
  pg_get_expr(indpred, indrelid), '(worker_id IS NOT NULL)',
  'pgxjob_asap_jobs_worker_id_idx is partial: where worker_id is not null'
) from pg_index where indexrelid = 'pgxjob_asap_jobs_worker_id_idx'::regclass;
select is(
  pg_get_expr(indpred, indrelid), '(worker_id IS NOT NULL)',
  'pgxjob_run_at_jobs_worker_id_idx is partial: where worker_id is not null'
) from pg_index where indexrelid = 'pgxjob_run_at_jobs_worker_id_idx'::regclass;
select is(
  pg_get_expr(indpred, indrelid), '(worker_id IS NULL)',
  'pgxjob_asap_jobs_fetch_idx holds only unowned jobs'
) from pg_index where indexrelid = 'pgxjob_asap_jobs_fetch_idx'::regclass;
select is(
  pg_get_expr(indpred, indrelid), '(worker_id IS NULL)',
  'pgxjob_run_at_jobs_fetch_idx holds only unowned jobs'
) from pg_index where indexrelid = 'pgxjob_run_at_jobs_fetch_idx'::regclass;
select has_index('pgxjob_job_runs', 'pgxjob_job_runs_finished_at_idx', array['finished_at']);
select index_is_type('pgxjob_job_runs', 'pgxjob_job_runs_finished_at_idx', 'brin');

-- The default group
select is((select id from pgxjob_groups where name = 'default'), 1, 'the default group has id 1');

-- Functions: the exact set, each with its search_path pinned.
-- Functions: the core set (later migrations may add more), one overload each, each with its
-- search_path pinned.
select is_empty(
  $$select unnest(array[
      'pgxjob_fetch_jobs(integer,integer,timestamp with time zone)',
      'pgxjob_linear_backoff(integer,integer,interval,timestamp with time zone)',
      'pgxjob_next_run_in(integer,timestamp with time zone)',
      'pgxjob_prune_job_runs(interval)',
      'pgxjob_reap_dead_workers(timestamp with time zone)',
      'pgxjob_release_unknown_jobs(integer,bigint[])',
      'pgxjob_record_job_results(bigint[],integer[],timestamp with time zone[],timestamp with time zone[],text[],timestamp with time zone[],integer[],interval[],boolean[],timestamp with time zone)',
      'pgxjob_register_group(text)',
      'pgxjob_register_job_type(text,text)',
      'pgxjob_register_worker(text,interval,timestamp with time zone)',
      'pgxjob_resolve_job_target(text,text)',
      'pgxjob_schedule(text,json,text,timestamp with time zone)',
      'pgxjob_schedule_many(text,json[],text,timestamp with time zone)',
      'pgxjob_unregister_worker(integer)',
      'pgxjob_worker_heartbeat(integer,timestamp with time zone)'
    ])
    except
    select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'public'::regnamespace and p.proname like 'pgxjob\_%'$$,
  'every core pgxjob function exists with its exact argument types'
);
select is_empty(
  $$select p.proname from pg_proc p
    where p.proname like 'pgxjob\_%'
    group by p.proname
    having count(*) > 1$$,
  'no pgxjob function is overloaded (overloads make literal arguments ambiguous)'
);

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.proname like 'pgxjob\_%'
      and not ('search_path=public, pg_temp' = any (coalesce(p.proconfig, '{}')))$$,
  'every pgxjob function pins search_path to its schema, then pg_temp'
);

select function_returns('pgxjob_schedule', array['text', 'json', 'text', 'timestamp with time zone'], 'bigint');
select is(
  pg_get_function_arguments('pgxjob_schedule(text, json, text, timestamptz)'::regprocedure),
  'job_type text, params json DEFAULT NULL::json, group_name text DEFAULT NULL::text, '
    'run_at timestamp with time zone DEFAULT NULL::timestamp with time zone',
  'pgxjob_schedule takes (job_type, params, group_name, run_at), all but job_type optional'
);
select volatility_is('pgxjob_linear_backoff',
  array['integer', 'integer', 'interval', 'timestamp with time zone'], 'stable',
  'pgxjob_linear_backoff is stable, not immutable: timestamptz + interval reads TimeZone');
select volatility_is('pgxjob_schedule', array['text', 'json', 'text', 'timestamp with time zone'], 'volatile');
select isnt_strict('pgxjob_schedule', array['text', 'json', 'text', 'timestamp with time zone'],
  'pgxjob_schedule is called on null input, so a null job type raises instead of returning null');
select function_returns('pgxjob_prune_job_runs', array['interval'], 'bigint');
select is(
  pg_get_function_arguments('pgxjob_prune_job_runs(interval)'::regprocedure),
  'older_than interval',
  'pgxjob_prune_job_runs takes older_than'
);
select function_returns('pgxjob_register_job_type', array['text', 'text'], 'integer');
select is(
  pg_get_function_arguments('pgxjob_register_job_type(text, text)'::regprocedure),
  'name text, default_group_name text DEFAULT ''default''::text',
  'pgxjob_register_job_type takes (name, default_group_name)'
);
select is(
  pg_get_function_arguments('pgxjob_register_group(text)'::regprocedure),
  'name text',
  'pgxjob_register_group takes (name)'
);
select function_returns('pgxjob_fetch_jobs', array['integer', 'integer', 'timestamp with time zone'],
  'setof record');
select is(
  pg_get_function_result('pgxjob_fetch_jobs(int, int, timestamptz)'::regprocedure),
  'TABLE(id bigint, group_id integer, type_id integer, type_name text, params json, '
    'inserted_at timestamp with time zone, run_at timestamp with time zone, '
    'error_count integer, last_error text, asap boolean)',
  'pgxjob_fetch_jobs returns the job fields the worker needs'
);
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.proname like 'pgxjob\_%'
      and p.prolang not in (select oid from pg_language where lanname in ('plpgsql', 'sql'))$$,
  'every pgxjob function is PL/pgSQL or SQL'
);
select * from finish();
rollback;
