-- Least privilege (sql/0003_security.sql): nothing is granted to PUBLIC, the functions that touch
-- tables run as their owner with a pinned search_path, and pgxjob_grant_application /
-- pgxjob_grant_worker grant exactly what each role needs. Roles are cluster-wide, so their names
-- carry a random suffix; CREATE ROLE is transactional and the final rollback drops them.
begin;
\ir helpers.psql
select plan(34);

select t_setup();

select 'pgxjob_tap_app_' || substr(md5(random()::text), 1, 12) as app_role,
  'pgxjob_tap_worker_' || substr(md5(random()::text), 1, 12) as worker_role,
  'pgxjob_tap_x"; drop table pgxjob_groups; --' || substr(md5(random()::text), 1, 12) as odd_role
\gset

create role :"app_role" nologin;
create role :"worker_role" nologin;
create role :"odd_role" nologin;

-- Nothing for PUBLIC
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace in ('public'::regnamespace, 'pgxjob_public'::regnamespace)
      and p.proname like 'pgxjob\_%'
      and has_function_privilege('public', p.oid, 'execute')$$,
  'PUBLIC may execute no pgxjob function'
);
select is_empty(
  $$select c.relname from pg_class c
    cross join lateral aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
    where c.relnamespace in ('public'::regnamespace, 'pgxjob_public'::regnamespace)
      and c.relname like 'pgxjob\_%'
      and c.relkind in ('r', 'p', 'v', 'm', 'S')
      and a.grantee = 0$$,
  'PUBLIC has no privilege on any pgxjob table or sequence'
);
select is_empty(
  $$select a.privilege_type from pg_namespace n
    cross join lateral aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
    where n.nspname = 'pgxjob_public' and a.grantee <> n.nspowner$$,
  'only the owner has any right on the private schema until roles are granted'
);

-- The rule: a function that runs with the owner's rights (security definer, or any function the
-- owner may call) resolves names only through schemas that no other role can create objects in,
-- with pg_temp last. Checked for every pgxjob function, whatever migration made it.
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.proname like 'pgxjob\_%'
      and p.pronamespace <> 'public'::regnamespace
      and not (
        p.proconfig is not null
        and exists (select 1 from unnest(p.proconfig) c
                    where c ~ '^search_path=.*, pg_temp$')
        and not exists (
          select 1
          from unnest(p.proconfig) c
          cross join lateral unnest(string_to_array(
            substr(c, length('search_path=') + 1), ', ')) as path(schema_name)
          where c like 'search_path=%'
            and path.schema_name <> 'pg_temp'
            and (
              not exists (select 1 from pg_namespace n where n.nspname = path.schema_name
                          and n.nspowner = p.proowner)
              or exists (
                select 1 from pg_namespace n
                cross join lateral aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                where n.nspname = path.schema_name
                  and a.privilege_type = 'CREATE' and a.grantee <> n.nspowner)
            )
        )
      )$$,
  'every implementation pins a search_path of owner-only schemas ending in pg_temp'
);
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'public'::regnamespace and p.proname like 'pgxjob\_%'
      and (p.prosecdef or p.prosrc !~ '^-- pgxjob wrapper\nselect (\* from )?pgxjob_public\.')$$,
  'the install schema holds only security invoker wrappers that call the private schema by name'
);

-- Security definer where needed, invoker elsewhere
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'pgxjob_public'::regnamespace
      and p.proname not in ('pgxjob_grant_privileges',
                            'pgxjob_grant_application', 'pgxjob_grant_worker',
                            'pgxjob_check_name', 'pgxjob_check_now', 'pgxjob_backoff_time',
                            'pgxjob_check_unique_key', 'pgxjob_check_trace_context',
                            'pgxjob_api_schema', 'pgxjob_refuse_delete_in_use',
                            'pgxjob_publish_functions')
      and not p.prosecdef$$,
  'every pgxjob implementation that touches a table is security definer'
);
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.proname in ('pgxjob_grant_privileges', 'pgxjob_grant_application',
                        'pgxjob_grant_worker', 'pgxjob_publish_functions')
      and p.prosecdef$$,
  'the grant functions keep the caller''s rights'
);
select is(
  (select count(*)::int from pg_proc p
   where p.pronamespace = 'pgxjob_public'::regnamespace and p.prosecdef) >= 12,
  true,
  'the core functions are among the security definer ones'
);

-- pgxjob_grant_application
select results_eq(
  format('select g collate "default" from pgxjob_grant_application(%L) g', :'app_role'),
  $$values
    ('usage on schema public'),
    ('usage on schema pgxjob_public'),
    ('execute on function pgxjob_cancel_job(job_id bigint, p_now timestamp with time zone)'),
    ('execute on function pgxjob_schedule(job_type text, params json, group_name text, '
     'run_at timestamp with time zone, priority integer, unique_key text, trace_context text)'),
    ('execute on function pgxjob_schedule_many(job_type text, params json[], group_name text, '
     'run_at timestamp with time zone, priority integer, unique_keys text[], '
     'trace_context text)')$$,
  'pgxjob_grant_application grants schema usage, the two schedule functions and cancel'
);
select results_eq(
  format($$select p.proname::text collate "default" from pg_proc p
           where p.proname like 'pgxjob\_%%' and has_function_privilege(%L, p.oid, 'execute')
           order by 1$$, :'app_role'),
  array['pgxjob_cancel_job', 'pgxjob_cancel_job', 'pgxjob_schedule', 'pgxjob_schedule',
        'pgxjob_schedule_many', 'pgxjob_schedule_many'],
  'the application role may execute the schedule functions and pgxjob_cancel_job only'
);
select is_empty(
  format($$select c.relname from pg_class c
           where c.relname like 'pgxjob\_%%' and c.relkind in ('r', 'S')
             and (has_table_privilege(%1$L, c.oid, 'select, insert, update, delete, truncate')
                  or (c.relkind = 'S' and has_sequence_privilege(%1$L, c.oid, 'usage, select, update')))$$,
         :'app_role'),
  'the application role has no privilege on any pgxjob table or sequence'
);

-- pgxjob_grant_worker
select ok(
  (select count(*) from pgxjob_grant_worker(:'worker_role')) >= 17,
  'pgxjob_grant_worker grants schema usage, its functions and the version table'
);
select ok(has_function_privilege(:'worker_role', 'pgxjob_fetch_jobs(int, int, timestamptz)', 'execute'),
  'the worker role may fetch jobs');
select ok(has_function_privilege(:'worker_role',
    'pgxjob_record_job_results(int, bigint[], int[], timestamptz[], timestamptz[], text[], timestamptz[], int[], interval[], boolean[], json[], boolean[], timestamptz)',
    'execute'),
  'the worker role may record results');
select ok(has_function_privilege(:'worker_role', 'pgxjob_status(int, timestamptz)', 'execute'),
  'the worker role may read the status the command line shows');
select ok(has_function_privilege(:'worker_role', 'pgxjob_prune_job_runs(interval)', 'execute'),
  'the worker role may prune the run log');
select ok(has_table_privilege(:'worker_role', 'pgxjob_schema_migrations', 'select'),
  'the worker role may read the schema version');
select ok(not has_table_privilege(:'worker_role', 'pgxjob_schema_migrations', 'insert, update, delete'),
  'the worker role may not change the schema version');
select is_empty(
  format($$select c.relname from pg_class c
           where c.relname like 'pgxjob\_%%' and c.relname <> 'pgxjob_schema_migrations'
             and c.relkind in ('r', 'S')
             and has_table_privilege(%L, c.oid, 'select, insert, update, delete, truncate')$$,
         :'worker_role'),
  'the worker role has no privilege on the job tables'
);
select results_eq(
  format($$select p.proname::text collate "default" from pg_proc p
           where p.proname in ('pgxjob_resolve_job_target', 'pgxjob_grant_privileges',
                               'pgxjob_grant_application', 'pgxjob_grant_worker')
             and has_function_privilege(%L, p.oid, 'execute')$$, :'worker_role'),
  array[]::text[],
  'the worker role may not call the internal resolver or the grant helpers'
);

-- Role names are data
select throws_ok(
  format('select pgxjob_grant_application(%L)', :'app_role' || '_missing'),
  'PJ005', null, 'granting to a role that does not exist is refused'
);
select throws_ok(
  $$select pgxjob_grant_worker('public')$$,
  'PJ005', null, 'granting to "public" (every role) is refused'
);
select throws_ok(
  $$select pgxjob_grant_application(null)$$,
  'PJ005', null, 'granting to a null role is refused'
);
select lives_ok(
  format('select pgxjob_grant_application(%L)', :'odd_role'),
  'a role name with quotes and a semicolon is granted to, as a name'
);
select ok(
  has_function_privilege(:'odd_role', 'pgxjob_schedule(text, json, text, timestamptz, int, text, text)',
                         'execute')
    and to_regclass('pgxjob_groups') is not null,
  'the odd role got its grant and the name ran no SQL'
);

-- What the roles can do
set local role :"app_role";
select lives_ok($$select pgxjob_schedule('t1', '{"a": 1}')$$,
  'the application role schedules a job');
select throws_ok($$select count(*) from pgxjob_asap_jobs$$, '42501', null,
  'the application role cannot read the jobs');
select throws_ok($$delete from pgxjob_asap_jobs$$, '42501', null,
  'the application role cannot delete jobs');
select throws_ok($$select pgxjob_register_worker('g1', interval '1 minute')$$, '42501', null,
  'the application role cannot register a worker');
select throws_ok($$select pgxjob_prune_job_runs(interval '0')$$, '42501', null,
  'the application role cannot prune the run log');
reset role;

set local role :"worker_role";
select is(
  (select count(*)::int from pgxjob_fetch_jobs(pgxjob_register_worker('g1', interval '1 minute'), 10)),
  1,
  'the worker role registers a worker and claims the application''s job'
);
select throws_ok($$select count(*) from pgxjob_job_runs$$, '42501', null,
  'the worker role cannot read the run log table directly');
reset role;

-- A hostile search_path in the caller's session does not redirect the functions
create schema t_evil;
create table t_evil.pgxjob_asap_jobs (like pgxjob_asap_jobs);
create table t_evil.pgxjob_job_types (like pgxjob_job_types);
insert into t_evil.pgxjob_job_types values (1, 't1', 1);
set local search_path = t_evil, public;
select lives_ok($$select public.pgxjob_schedule('t1')$$,
  'pgxjob_schedule works with a shadowing schema first on the search_path');
select ok(
  (select count(*) from t_evil.pgxjob_asap_jobs) = 0
    and (select count(*) from pgxjob_public.pgxjob_asap_jobs) = 2,
  'the job went into pgxjob''s table, not the shadow'
);

select * from finish();
rollback;
