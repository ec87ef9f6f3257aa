-- Least privilege: pgxjob's tables become private to their owner, the functions that touch them
-- run as that owner (security definer, search_path pinned), and two helpers grant what an
-- application role and a worker role need. Creates no role. Takes no lock on any table (GRANT,
-- REVOKE and ALTER FUNCTION change catalog rows only).

-- Every function that reads or writes a pgxjob table runs with its owner's rights, so that callers
-- need no table privilege at all. Their search_path is already pinned to "<schema>, pg_temp"
-- (set search_path from current), which security definer requires: pg_catalog is searched first,
-- pg_temp last and never for functions, and the caller's search_path is not used, so no object a
-- caller creates can stand in for a table, a function or an operator these functions use.
-- The loop covers the functions of 0001 and 0002. A later migration runs after this one, also in
-- a fresh database, so each function it creates must say `security definer` itself and revoke
-- EXECUTE from PUBLIC (tests_sql/security.sql checks every pgxjob function for both). The loop
-- skips the few that touch no table or must keep the caller's rights:
--   pgxjob_linear_backoff       pure arithmetic;
--   pgxjob_resolve_job_target   internal, only called by security definer functions;
--   pgxjob_grant_*              run GRANT as the administrator who calls them (created below).
do $$
declare
  v_fn regprocedure;
begin
  for v_fn in
    select p.oid::regprocedure
    from pg_proc p
    where p.pronamespace = (select n.oid from pg_namespace n where n.nspname = current_schema())
      and p.proname like 'pgxjob\_%'
      and p.proname not in ('pgxjob_linear_backoff', 'pgxjob_resolve_job_target')
    order by p.proname
  loop
    execute format('alter function %s security definer', v_fn);
  end loop;
end;
$$;

-- Grants to callers by role name. Identifiers are quoted with format('%I'), never concatenated,
-- and the role must exist: an unknown name, or "public" (which GRANT reads as every role), is
-- refused. Functions and tables are granted by name, only pgxjob_* ones, and only those that
-- exist in this schema, so the helpers work on any schema version; a later migration that adds
-- a function a caller needs must add its name to the lists below (create or replace). Security
-- invoker: they grant with the rights of whoever calls them, normally the role that owns
-- pgxjob's objects.
-- Returns one row per privilege granted, for example 'execute on function pgxjob_schedule(...)'.
create function pgxjob_grant_privileges(
  role_name name,
  function_names text[],
  table_names text[]
)
returns setof text
language plpgsql
volatile
called on null input
set search_path from current
as $$
declare
  v_schema name := current_schema();
  v_object record;
begin
  if role_name is null or not exists (select 1 from pg_roles r where r.rolname = role_name) then
    raise exception 'pgxjob: role "%" does not exist', role_name
      using errcode = 'PJ005',
            hint = 'Create the role first (create role ... nologin, or login with a password), '
                   'then grant it pgxjob''s privileges.';
  end if;

  execute format('grant usage on schema %I to %I', v_schema, role_name);
  return next format('usage on schema %I', v_schema);

  for v_object in
    select p.proname, pg_get_function_identity_arguments(p.oid) as args
    from pg_proc p
    where p.pronamespace = (select n.oid from pg_namespace n where n.nspname = v_schema)
      and p.proname like 'pgxjob\_%'
      and p.proname = any (function_names)
    order by p.proname
  loop
    execute format('grant execute on function %I.%I(%s) to %I',
                   v_schema, v_object.proname, v_object.args, role_name);
    return next format('execute on function %I(%s)', v_object.proname, v_object.args);
  end loop;

  for v_object in
    select c.relname
    from pg_class c
    where c.relnamespace = (select n.oid from pg_namespace n where n.nspname = v_schema)
      and c.relname like 'pgxjob\_%'
      and c.relname = any (table_names)
      and c.relkind = 'r'
    order by c.relname
  loop
    execute format('grant select on table %I.%I to %I', v_schema, v_object.relname, role_name);
    return next format('select on table %I', v_object.relname);
  end loop;
end;
$$;

-- An application role may enqueue jobs (from its own code or its triggers) and nothing else: it
-- reads no pgxjob table and cannot claim, finish or delete jobs.
create function pgxjob_grant_application(role_name name)
returns setof text
language sql
volatile
called on null input
set search_path from current
as $$
  select pgxjob_grant_privileges(
    role_name,
    array['pgxjob_schedule', 'pgxjob_schedule_many'],
    array[]::text[]
  )
$$;

-- A worker role runs Python Schedulers and workers and the command line: it registers groups,
-- job types and workers, claims and finishes jobs, schedules, prunes and reads the monitoring
-- functions, and reads the version table the client checks at startup. It reads no other table.
create function pgxjob_grant_worker(role_name name)
returns setof text
language sql
volatile
called on null input
set search_path from current
as $$
  select pgxjob_grant_privileges(
    role_name,
    array[
      'pgxjob_register_group', 'pgxjob_register_job_type',
      'pgxjob_schedule', 'pgxjob_schedule_many',
      'pgxjob_register_worker', 'pgxjob_worker_heartbeat', 'pgxjob_reap_dead_workers',
      'pgxjob_unregister_worker', 'pgxjob_fetch_jobs', 'pgxjob_next_run_in',
      'pgxjob_release_unknown_jobs',
      'pgxjob_record_job_results', 'pgxjob_linear_backoff', 'pgxjob_prune_job_runs',
      'pgxjob_job_counts', 'pgxjob_worker_status', 'pgxjob_recent_job_runs',
      'pgxjob_job_run_stats', 'pgxjob_status'
    ],
    array['pgxjob_schema_migrations']
  )
$$;

-- PostgreSQL grants EXECUTE on every new function to PUBLIC; take it back from all of pgxjob's,
-- the grant helpers included. Tables and sequences get no PUBLIC privilege by default; revoking
-- anyway undoes any grant an administrator made before this version. Only pgxjob_* objects of
-- this schema are touched: the application's own objects may share the schema.
do $$
declare
  v_object record;
begin
  for v_object in
    select p.oid::regprocedure as fn
    from pg_proc p
    where p.pronamespace = (select n.oid from pg_namespace n where n.nspname = current_schema())
      and p.proname like 'pgxjob\_%'
  loop
    execute format('revoke all on function %s from public', v_object.fn);
  end loop;

  for v_object in
    select c.relname, c.relkind
    from pg_class c
    where c.relnamespace = (select n.oid from pg_namespace n where n.nspname = current_schema())
      and c.relname like 'pgxjob\_%'
      and c.relkind in ('r', 'p', 'v', 'm', 'S')
  loop
    execute format('revoke all on %s %I.%I from public',
                   case v_object.relkind when 'S' then 'sequence' else 'table' end,
                   current_schema(), v_object.relname);
  end loop;
end;
$$;
