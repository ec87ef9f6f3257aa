-- The schema contract: tables, columns, indexes, constraints and function signatures that
-- users, triggers and the Python package rely on.
begin;
\ir helpers.psql
select plan(53);

-- Tables
select results_eq(
  $$select c.relname::text collate "default" from pg_class c
    where c.relnamespace = 'pgxjob_public'::regnamespace and c.relkind = 'r'
    order by 1$$,
  array['pgxjob_asap_jobs', 'pgxjob_groups', 'pgxjob_job_runs', 'pgxjob_job_types',
        'pgxjob_periodic_jobs', 'pgxjob_run_at_jobs', 'pgxjob_unique_keys', 'pgxjob_workers'],
  'the private schema holds pgxjob''s eight tables'
);
select results_eq(
  $$select c.relname::text collate "default" from pg_class c
    where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and c.relname like 'pgxjob\_%'
    order by 1$$,
  array['pgxjob_schema_migrations'],
  'the install schema holds only the version table'
);

select columns_are('pgxjob_groups', array['id', 'name', 'paused_at']);
select columns_are('pgxjob_job_types', array['id', 'name', 'default_group_id']);
select columns_are('pgxjob_workers',
  array['id', 'group_id', 'inserted_at', 'heartbeat_at', 'dead_after', 'previous_heartbeat_at',
        'host', 'pid']);
select columns_are('pgxjob_asap_jobs',
  array['id', 'inserted_at', 'group_id', 'type_id', 'worker_id', 'params', 'priority',
        'unique_key', 'cancel_requested', 'trace_context']);
select columns_are('pgxjob_run_at_jobs',
  array['id', 'inserted_at', 'run_at', 'next_run_at', 'group_id', 'type_id', 'worker_id',
        'error_count', 'last_error', 'params', 'priority', 'unique_key', 'cancel_requested',
        'trace_context']);
select columns_are('pgxjob_unique_keys', array['type_id', 'unique_key', 'job_id']);
select columns_are('pgxjob_periodic_jobs',
  array['id', 'name', 'cron', 'time_zone', 'type_id', 'group_id', 'params', 'priority',
        'next_fire_at', 'last_fired_at', 'last_job_id', 'inserted_at', 'updated_at']);
select col_is_pk('pgxjob_unique_keys', array['type_id', 'unique_key'],
  'a unique key is held once per job type');
select columns_are('pgxjob_job_runs',
  array['job_id', 'run_number', 'group_id', 'type_id', 'inserted_at', 'run_at', 'started_at',
        'finished_at', 'params', 'error', 'outcome', 'output', 'trace_context']);

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

-- No foreign keys on the hot tables: the reaper and unregistering release a worker's jobs
-- explicitly, in the global lock order, and a claim pays no KEY SHARE lock per row.
select is_empty(
  $$select conname from pg_constraint
    where contype = 'f' and conrelid in ('pgxjob_asap_jobs'::regclass, 'pgxjob_run_at_jobs'::regclass)$$,
  'the hot tables have no foreign key'
);
select has_trigger('pgxjob_job_types', 'pgxjob_job_types_refuse_delete_in_use',
  'a job type that jobs still use cannot be deleted');
select has_trigger('pgxjob_groups', 'pgxjob_groups_refuse_delete_in_use',
  'a group that jobs still use cannot be deleted');

-- Indexes
select indexes_are('pgxjob_asap_jobs',
  array['pgxjob_asap_jobs_pkey', 'pgxjob_asap_jobs_fetch_idx', 'pgxjob_asap_jobs_worker_id_idx']);
select indexes_are('pgxjob_run_at_jobs',
  array['pgxjob_run_at_jobs_pkey', 'pgxjob_run_at_jobs_fetch_idx',
        'pgxjob_run_at_jobs_priority_fetch_idx', 'pgxjob_run_at_jobs_worker_id_idx']);
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
      'pgxjob_reap_dead_workers(timestamp with time zone,integer)',
      'pgxjob_release_unknown_jobs(integer,bigint[])',
      'pgxjob_record_job_results(integer,bigint[],integer[],timestamp with time zone[],timestamp with time zone[],text[],timestamp with time zone[],integer[],interval[],boolean[],json[],boolean[],timestamp with time zone)',
      'pgxjob_cancel_job(bigint,timestamp with time zone)',
      'pgxjob_cancel_requests(integer)',
      'pgxjob_register_group(text)',
      'pgxjob_register_job_type(text,text)',
      'pgxjob_register_worker(text,interval,timestamp with time zone)',
      'pgxjob_schedule(text,json,text,timestamp with time zone,integer,text,text)',
      'pgxjob_schedule_many(text,json[],text,timestamp with time zone,integer,text[],text)',
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
    group by p.pronamespace, p.proname
    having count(*) > 1$$,
  'no pgxjob function is overloaded (overloads make literal arguments ambiguous)'
);

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'pgxjob_public'::regnamespace
      and array(select c from unnest(p.proconfig) c order by c)
          is distinct from array(
            select c
            from unnest(array['search_path=pgxjob_public, pg_temp'] || case p.proname
              -- the hot functions' plans must not depend on statistics (0010)
              when 'pgxjob_fetch_jobs' then
                array['enable_sort=off', 'enable_seqscan=off', 'jit=off']
              when 'pgxjob_apply_job_results' then
                array['enable_nestloop=off', 'enable_seqscan=off', 'jit=off']
              when 'pgxjob_next_run_in' then array['enable_sort=off', 'jit=off']
              else '{}'::text[]
            end) c
            order by c)$$,
  'every implementation pins search_path to the private schema, then pg_temp, and sets nothing '
  'else but the planner settings of the batch and wake-up functions'
);
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'public'::regnamespace and p.proname like 'pgxjob\_%'
      and not (p.prolang = (select oid from pg_language where lanname = 'sql')
               and not p.prosecdef and p.proconfig is null
               and p.prosrc ~ ('^-- pgxjob wrapper\nselect (\* from )?pgxjob_public\.'
                               || p.proname || '\(((\$[0-9]+)(, \$[0-9]+)*)?\)$')
               and exists (select 1 from pg_proc i
                           where i.pronamespace = 'pgxjob_public'::regnamespace
                             and i.proname = p.proname
                             and i.proargtypes = p.proargtypes))$$,
  'every function of the install schema is a security invoker SQL wrapper that calls only its '
  'implementation, schema-qualified'
);

select function_returns('pgxjob_schedule', array['text', 'json', 'text', 'timestamp with time zone', 'integer', 'text', 'text'], 'bigint');
select is(
  pg_get_function_arguments('pgxjob_schedule(text, json, text, timestamptz, int, text, text)'::regprocedure),
  'job_type text, params json DEFAULT NULL::json, group_name text DEFAULT NULL::text, '
    'run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, '
    'priority integer DEFAULT 0, unique_key text DEFAULT NULL::text, '
    'trace_context text DEFAULT NULL::text',
  'pgxjob_schedule takes (job_type, params, group_name, run_at, priority, unique_key, '
  'trace_context), all but job_type optional'
);
select is(
  pg_get_function_arguments(
    'pgxjob_schedule_many(text, json[], text, timestamptz, int, text[], text)'::regprocedure),
  'job_type text, params json[], group_name text DEFAULT NULL::text, '
    'run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, '
    'priority integer DEFAULT 0, unique_keys text[] DEFAULT NULL::text[], '
    'trace_context text DEFAULT NULL::text',
  'pgxjob_schedule_many takes (job_type, params, group_name, run_at, priority, unique_keys, '
  'trace_context)'
);
select volatility_is('pgxjob_linear_backoff',
  array['integer', 'integer', 'interval', 'timestamp with time zone'], 'stable',
  'pgxjob_linear_backoff is stable, not immutable: timestamptz + interval reads TimeZone');
select volatility_is('pgxjob_schedule', array['text', 'json', 'text', 'timestamp with time zone', 'integer', 'text', 'text'], 'volatile');
select isnt_strict('pgxjob_schedule', array['text', 'json', 'text', 'timestamp with time zone', 'integer', 'text', 'text'],
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
    'error_count integer, last_error text, asap boolean, priority integer, '
    'cancel_requested boolean, trace_context text)',
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
