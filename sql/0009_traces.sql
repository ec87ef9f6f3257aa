-- Traces: a job can carry the W3C traceparent of the context that scheduled it, so the span of
-- each of its runs continues the producer's trace. Adds a nullable column without a default to
-- both hot tables and the run log (no table rewrite; the brief ACCESS EXCLUSIVE lock of each
-- ALTER TABLE). pgxjob_schedule and pgxjob_schedule_many gain a trailing trace_context argument
-- and pgxjob_fetch_jobs a trace_context column: they are dropped and created again, with the
-- grants they had. Calls with the earlier arguments resolve to the new functions unchanged.
--
-- Lock order: unchanged.

-- The implementation lives in the private schema; see 0005 for why the search_path is set here.
select pg_catalog.set_config(
  'search_path',
  pg_catalog.format('%I, %I, pg_temp', pg_catalog.current_schema(),
                    'pgxjob_' || pg_catalog.current_schema()),
  false
);

insert into pgxjob_schema_migrations (version, name)
values (9, 'traces')
on conflict (version) do nothing;

-- Who may execute the functions whose signatures change, before the drop takes the grants with
-- it; each grant is given again, on the new function, at the end.
create temp table pgxjob_0009_grants as
select distinct p.proname::text as function_name,
  pg_catalog.pg_get_userbyid(a.grantee) as role_name
from pg_catalog.pg_proc p
cross join lateral pg_catalog.aclexplode(p.proacl) a
where p.pronamespace = (select n.oid from pg_catalog.pg_namespace n
                        where n.nspname = pg_catalog.current_schema())
  and p.proname in ('pgxjob_schedule', 'pgxjob_schedule_many', 'pgxjob_fetch_jobs')
  and a.privilege_type = 'EXECUTE' and a.grantee <> 0;

-- The traceparent of the context that scheduled the job, or null (scheduled from SQL without
-- one, a trigger, a periodic schedule). A retried ASAP job takes it to the timed table, and each
-- logged run keeps it, so a finished job's trace can still be found from its runs.
alter table pgxjob_asap_jobs add column trace_context text;
alter table pgxjob_run_at_jobs add column trace_context text;
alter table pgxjob_job_runs add column trace_context text;

-- Raises PJ005 unless p_trace_context is null or a W3C traceparent: version, trace id, parent id
-- and flags in lowercase hex ("00-<32>-<16>-<2>", 55 characters), the version not ff and neither
-- id all zeros. The length is tested first, so a hostile megabyte costs no regular expression;
-- the message quotes at most 60 characters of it.
create function pgxjob_check_trace_context(p_trace_context text)
returns void
language plpgsql
immutable
called on null input
as $$
begin
  if p_trace_context is null then
    return;
  end if;
  if octet_length(p_trace_context) <> 55
    or p_trace_context !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
    or left(p_trace_context, 2) = 'ff'
    or substr(p_trace_context, 4, 32) = repeat('0', 32)
    or substr(p_trace_context, 37, 16) = repeat('0', 16)
  then
    raise exception 'pgxjob: trace_context % is not a W3C traceparent',
      case
        when length(p_trace_context) > 60
        then quote_literal(left(p_trace_context, 60)) || format('... (%s bytes)',
                                                                octet_length(p_trace_context))
        else quote_literal(p_trace_context)
      end
      using errcode = 'PJ005',
            hint = 'Pass null, or a traceparent such as '
                   '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01: version, trace id, '
                   'parent id and flags in lowercase hex.';
  end if;
end;
$$;

-- The functions whose signatures change: their wrapper in the install schema and their
-- implementation in the private one.
do $$
declare
  v_fn text;
begin
  foreach v_fn in array array[
    'pgxjob_schedule(text, json, text, timestamptz, int, text)',
    'pgxjob_schedule_many(text, json[], text, timestamptz, int, text[])',
    'pgxjob_fetch_jobs(int, int, timestamptz)'
  ] loop
    execute format('drop function %I.%s', current_schema(), v_fn);
    execute format('drop function %I.%s', 'pgxjob_' || current_schema(), v_fn);
  end loop;

  -- Internal: no wrapper.
  execute format('drop function %I.pgxjob_insert_job(int, int, text, json, timestamptz, int, text)',
                 'pgxjob_' || current_schema());
end;
$$;

-- Inserts one job, or returns the id of the job that holds its unique key; the job of 0005 with
-- its trace context. Shared by pgxjob_schedule, pgxjob_schedule_many (for jobs with keys),
-- periodic schedules and pgxjob_retry_job_run. p_trace_context defaults to null so that the
-- seven-argument call of 0007's pgxjob_fire_periodic_jobs resolves to this function unchanged.
create function pgxjob_insert_job(
  p_type_id int,
  p_group_id int,
  p_group_name text,
  p_params json,
  p_run_at timestamptz,
  p_priority int,
  p_unique_key text,
  p_trace_context text default null
)
returns bigint
language plpgsql
volatile
called on null input
as $$
declare
  v_id bigint;
begin
  if p_unique_key is not null then
    perform pgxjob_check_unique_key(p_unique_key);
    -- A key freed between our conflict and our look-up (its job just finished) is taken again.
    for v_try in 1 .. 10 loop
      v_id := nextval('pgxjob_job_id_seq');
      insert into pgxjob_unique_keys (type_id, unique_key, job_id)
      values (p_type_id, p_unique_key, v_id)
      on conflict on constraint pgxjob_unique_keys_pkey do nothing;
      exit when found;

      select k.job_id into v_id
      from pgxjob_unique_keys k
      where k.type_id = p_type_id
        and k.unique_key = p_unique_key;
      if v_id is not null then
        return v_id;
      end if;
    end loop;
  else
    v_id := nextval('pgxjob_job_id_seq');
  end if;

  if p_run_at is null or p_run_at <= now() then
    insert into pgxjob_asap_jobs (
      id, group_id, type_id, params, priority, unique_key, trace_context
    )
    values (
      v_id, p_group_id, p_type_id, p_params, coalesce(p_priority, 0), p_unique_key,
      p_trace_context
    );

    perform pg_notify('pgxjob_job_available', p_group_name);
  else
    insert into pgxjob_run_at_jobs (
      id, run_at, next_run_at, group_id, type_id, params, priority, unique_key, trace_context
    )
    values (
      v_id, p_run_at, p_run_at, p_group_id, p_type_id, p_params, coalesce(p_priority, 0),
      p_unique_key, p_trace_context
    );

    -- Lets idle workers of the group move their wake-up earlier (one per group per transaction).
    perform pg_notify('pgxjob_timed_job_scheduled', p_group_name);
  end if;

  return v_id;
end;
$$;

-- The public enqueue function of 0005, which also takes the traceparent of the context that
-- schedules the job (null: none; its runs start traces of their own). Runs in the caller's
-- transaction: a rollback leaves no job and sends no notification. A run_at that is null or not
-- in the future makes an ASAP job. Higher priority runs first among the group's due jobs. With a
-- unique_key, while a job of the same type holds the key (waiting, scheduled, retrying or
-- running), the existing job's id is returned and nothing is written or notified. A malformed
-- trace_context raises PJ005.
create function pgxjob_schedule(
  job_type text,
  params json default null,
  group_name text default null,
  run_at timestamptz default null,
  priority int default 0,
  unique_key text default null,
  trace_context text default null
)
returns bigint
language plpgsql
volatile
called on null input
as $$
declare
  v_type_id int;
  v_group_id int;
  v_group_name text;
begin
  -- The lookup is inlined rather than a call to pgxjob_resolve_job_target: this is the hot path
  -- of every producer. The resolver runs only when the lookup finds nothing, to raise the precise
  -- error.
  select t.id, g.id, g.name
  into v_type_id, v_group_id, v_group_name
  from pgxjob_job_types t
  join pgxjob_groups g
    on g.id = t.default_group_id and pgxjob_schedule.group_name is null
    or g.name = pgxjob_schedule.group_name
  where t.name = job_type;

  if v_type_id is null then
    perform pgxjob_resolve_job_target(job_type, group_name);
  end if;
  if trace_context is not null then
    perform pgxjob_check_trace_context(trace_context);
  end if;

  return pgxjob_insert_job(v_type_id, v_group_id, v_group_name, params, run_at, priority,
                           unique_key, trace_context);
end;
$$;

-- Bulk enqueue: one job per element of params, all of one type, group, run_at, priority and
-- trace context, in one statement when no unique keys are given. unique_keys, when given, has one
-- key (or null) per element of params; a job whose key is held returns the holder's id in its
-- place. Returns the ids in the order of params.
create function pgxjob_schedule_many(
  job_type text,
  params json[],
  group_name text default null,
  run_at timestamptz default null,
  priority int default 0,
  unique_keys text[] default null,
  trace_context text default null
)
returns setof bigint
language plpgsql
volatile
called on null input
as $$
declare
  v_target record;
  v_i int;
begin
  v_target := pgxjob_resolve_job_target(job_type, group_name);
  perform pgxjob_check_trace_context(trace_context);

  if params is null or cardinality(params) = 0 then
    return;
  end if;

  if unique_keys is not null then
    if cardinality(unique_keys) <> cardinality(params) then
      raise exception 'pgxjob: unique_keys has % elements and params %', cardinality(unique_keys),
        cardinality(params)
        using errcode = 'PJ005',
              hint = 'Pass one unique key (or null) per job, or no unique_keys at all.';
    end if;

    for v_i in 1 .. cardinality(params) loop
      return next pgxjob_insert_job(v_target.type_id, v_target.group_id,
        v_target.resolved_group_name, params[v_i], run_at, priority, unique_keys[v_i],
        trace_context);
    end loop;
    return;
  end if;

  if run_at is null or run_at <= now() then
    return query
    insert into pgxjob_asap_jobs (group_id, type_id, params, priority, trace_context)
    select v_target.group_id, v_target.type_id, p.params, coalesce(priority, 0),
      pgxjob_schedule_many.trace_context
    from unnest(params) with ordinality as p(params, ord)
    order by p.ord
    returning id;

    perform pg_notify('pgxjob_job_available', v_target.resolved_group_name);
  else
    return query
    insert into pgxjob_run_at_jobs (
      run_at, next_run_at, group_id, type_id, params, priority, trace_context
    )
    select run_at, run_at, v_target.group_id, v_target.type_id, p.params, coalesce(priority, 0),
      pgxjob_schedule_many.trace_context
    from unnest(params) with ordinality as p(params, ord)
    order by p.ord
    returning id;

    perform pg_notify('pgxjob_timed_job_scheduled', v_target.resolved_group_name);
  end if;
end;
$$;

-- The fetch of 0008, which also returns each job's trace context.
create function pgxjob_fetch_jobs(
  p_worker_id int,
  p_limit int,
  p_now timestamptz default now()
)
returns table (
  id bigint,
  group_id int,
  type_id int,
  type_name text,
  params json,
  inserted_at timestamptz,
  run_at timestamptz,
  error_count int,
  last_error text,
  asap boolean,
  priority int,
  cancel_requested boolean,
  trace_context text
)
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_column
declare
  v_now timestamptz := coalesce(p_now, now());
  v_group_id int;
  v_paused boolean;
  v_priority int;
  v_timed_candidates bigint[] := '{}';
  v_batch bigint[];
  v_timed bigint[];
  v_asap bigint[];
begin
  if p_limit is null or p_limit < 1 then
    raise exception 'pgxjob: fetch limit must be a positive number, got %', p_limit
      using errcode = 'PJ005',
            hint = 'Pass the number of jobs the worker can take, for example 100.';
  end if;

  -- KEY SHARE on the worker's row: a reaper deleting it waits until this claim commits, then
  -- releases what it claimed; without it the claim could land on a worker already reaped. The
  -- group row is read without a lock: a pause that commits during this fetch applies to the next.
  select w.group_id, g.paused_at is not null into v_group_id, v_paused
  from pgxjob_workers w
  join pgxjob_groups g on g.id = w.group_id
  where w.id = p_worker_id
  for key share of w;

  if v_group_id is null then
    raise exception 'pgxjob: worker % is not registered', p_worker_id
      using errcode = 'PJ004',
            hint = 'The worker was reaped or unregistered; register it again.';
  end if;

  if v_paused then
    return;
  end if;

  -- Due periodic schedules of the group become ASAP jobs first, in this transaction, so this
  -- fetch can claim them. One index probe when none is due.
  if exists (
    select 1 from pgxjob_periodic_jobs p
    where p.group_id = v_group_id and p.next_fire_at <= v_now
  ) then
    perform pgxjob_fire_periodic_jobs(v_group_id, v_now);
  end if;

  -- Due timed jobs, one priority level at a time from the highest: each level is one range scan
  -- of the priority fetch index that stops at its first job not yet due, so jobs scheduled later
  -- cost nothing. skip locked: concurrent fetchers take disjoint rows.
  loop
    select d.priority into v_priority
    from pgxjob_run_at_jobs d
    where d.group_id = v_group_id
      and d.worker_id is null
      and (v_priority is null or d.priority < v_priority)
    order by d.priority desc
    limit 1;
    exit when not found;

    v_batch := array(
      select d.id
      from pgxjob_run_at_jobs d
      where d.group_id = v_group_id
        and d.worker_id is null
        and d.priority = v_priority
        and d.next_run_at <= v_now
      order by d.next_run_at
      limit p_limit - cardinality(v_timed_candidates)
      for update skip locked
    );
    v_timed_candidates := v_timed_candidates || v_batch;
    exit when cardinality(v_timed_candidates) >= p_limit;
  end loop;

  with timed as (
    select d.id, d.priority, d.next_run_at as due_at, false as is_asap
    from pgxjob_run_at_jobs d
    where d.id = any (v_timed_candidates)
  ),
  asap as (
    select d.id, d.priority, d.inserted_at as due_at, true as is_asap
    from pgxjob_asap_jobs d
    where d.group_id = v_group_id
      and d.worker_id is null
    order by d.priority desc, d.id
    limit p_limit
    for update skip locked
  ),
  chosen as (
    select c.id, c.is_asap
    from (select * from timed union all select * from asap) c
    order by c.priority desc, c.due_at, c.id
    limit p_limit
  )
  select array_agg(c.id) filter (where not c.is_asap), array_agg(c.id) filter (where c.is_asap)
  into v_timed, v_asap
  from chosen c;

  if v_timed is null and v_asap is null then
    return;
  end if;

  -- The claimed ids go to the updates as arrays, so each row is found through the primary key.
  return query
  with claimed_timed as (
    update pgxjob_run_at_jobs j
    set worker_id = p_worker_id
    where j.id = any (v_timed)
    returning j.id, j.group_id, j.type_id, j.params, j.inserted_at, j.run_at, j.error_count,
      j.last_error, false as is_asap, j.priority, j.cancel_requested, j.next_run_at as due_at,
      j.trace_context
  ),
  claimed_asap as (
    update pgxjob_asap_jobs j
    set worker_id = p_worker_id
    where j.id = any (v_asap)
    returning j.id, j.group_id, j.type_id, j.params, j.inserted_at, j.inserted_at as run_at,
      0 as error_count, null::text as last_error, true as is_asap, j.priority,
      j.cancel_requested, j.inserted_at as due_at, j.trace_context
  ),
  claimed as (
    select * from claimed_timed
    union all
    select * from claimed_asap
  )
  select c.id, c.group_id, c.type_id, t.name, c.params, c.inserted_at, c.run_at, c.error_count,
    c.last_error, c.is_asap, c.priority, c.cancel_requested, c.trace_context
  from claimed c
  left join pgxjob_job_types t on t.id = c.type_id
  order by c.priority desc, c.due_at, c.id;
end;
$$;

-- The result batch of 0005: a retried ASAP job keeps its trace context in the timed table, and
-- every logged run keeps it. See pgxjob_record_job_results.
create or replace function pgxjob_apply_job_results(
  p_worker_id int,
  p_job_ids bigint[],
  p_error_counts int[],
  p_started_at timestamptz[],
  p_finished_at timestamptz[],
  p_errors text[],
  p_retry_at timestamptz[],
  p_backoff_max_retries int[],
  p_backoff_base_delays interval[],
  p_log boolean[],
  p_outputs json[],
  p_cancelled boolean[],
  p_now timestamptz,
  out changed int,
  out stale_job_ids bigint[]
)
language plpgsql
volatile
called on null input
as $$
declare
  v_notified bigint;
begin
  -- Lock order: the rows this worker still owns, ASAP table first, each in id order. The
  -- statement below then takes no job row lock it does not already hold.
  perform
  from pgxjob_asap_jobs j
  where j.id = any (p_job_ids)
    and j.worker_id = p_worker_id
  order by j.id
  for update;

  perform
  from pgxjob_run_at_jobs j
  where j.id = any (p_job_ids)
    and j.worker_id = p_worker_id
  order by j.id
  for update;

  -- Data-modifying CTEs share one snapshot, so each job is handled by exactly one branch: a job
  -- id appears once per batch (the last result wins), and the branches' conditions are disjoint.
  -- Every branch requires the job to be owned by p_worker_id: the worker id is the fencing token,
  -- and a result from a worker that was reaped (and whose job another worker may be running)
  -- changes nothing.
  with input as (
    select distinct on (r.job_id)
      r.job_id, r.error_count, r.started_at, r.finished_at, r.log, r.output,
      r.error is not null as failed, coalesce(r.cancelled, false) as cancelled,
      case
        when r.error is null then null
        when r.retry_at is not null then r.retry_at
        when r.max_retries is null or r.base_delay is null then null
        when r.error_count >= r.max_retries then null
        else pgxjob_backoff_time(p_now, r.error_count, r.base_delay)
      end as next_run_at,
      case
        when r.error is null then null
        when r.retry_at is null and r.max_retries is not null and r.base_delay is not null
          and r.error_count < r.max_retries
          and pgxjob_backoff_time(p_now, r.error_count, r.base_delay) is null
        then r.error || format(E'\n(pgxjob: the retry time %s + (%s + 1) * %s is out of range; '
          'recorded as a final failure)', p_now, r.error_count, r.base_delay)
        else r.error
      end as error
    from unnest(
      p_job_ids, p_error_counts, p_started_at, p_finished_at, p_errors, p_retry_at,
      p_backoff_max_retries, p_backoff_base_delays, p_log, p_outputs, p_cancelled
    ) with ordinality as r(
      job_id, error_count, started_at, finished_at, error, retry_at, max_retries, base_delay,
      log, output, cancelled, ord
    )
    order by r.job_id, r.ord desc
  ),
  -- Whether each job this worker owns has a cancel request.
  owned as (
    select j.id, j.cancel_requested
    from pgxjob_asap_jobs j
    where j.id = any (p_job_ids) and j.worker_id = p_worker_id
    union all
    select j.id, j.cancel_requested
    from pgxjob_run_at_jobs j
    where j.id = any (p_job_ids) and j.worker_id = p_worker_id
  ),
  -- A cancelled job finishes whatever its handler did, and is never retried. A retry of a job
  -- that has reached the largest error_count is a final failure.
  decided as (
    select i.job_id, i.error_count, i.started_at, i.finished_at, i.log, i.output, i.failed,
      i.cancelled or coalesce(o.cancel_requested, false) as cancelled,
      case
        when i.cancelled or coalesce(o.cancel_requested, false) then null
        when i.error_count < 2147483647 then i.next_run_at
      end as next_run_at,
      case
        when i.next_run_at is not null and i.error_count >= 2147483647
          and not (i.cancelled or coalesce(o.cancel_requested, false))
        then i.error || E'\n(pgxjob: error_count cannot grow past 2147483647; recorded as a '
          'final failure)'
        else i.error
      end as error
    from input i
    left join owned o on o.id = i.job_id
  ),
  -- Every branch restricts its table by an array of ids, so rows are found through the primary
  -- key; a plain join to the input would let the planner hash the whole table per batch.
  done_asap as (
    delete from pgxjob_asap_jobs j
    where j.id = any (array(select x.job_id from decided x where x.next_run_at is null))
      and j.worker_id = p_worker_id
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.inserted_at as run_at, j.params,
      0 as error_count, j.unique_key, j.trace_context
  ),
  done_run_at as (
    -- A final failure must also match the error_count: a result for an earlier run of the job
    -- must not end it.
    delete from pgxjob_run_at_jobs j
    using decided i
    where j.id = any (array(select x.job_id from decided x where x.next_run_at is null))
      and j.id = i.job_id
      and j.worker_id = p_worker_id
      and (not i.failed or i.cancelled or j.error_count = i.error_count)
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.run_at, j.params, j.error_count,
      j.unique_key, j.trace_context
  ),
  moved as (
    delete from pgxjob_asap_jobs j
    using decided i
    where j.id = any (array(
        select x.job_id from decided x where x.next_run_at is not null and x.error_count = 0
      ))
      and j.id = i.job_id
      and j.worker_id = p_worker_id
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.inserted_at as run_at, j.params,
      0 as error_count, i.next_run_at, i.error, j.priority, j.unique_key, j.trace_context
  ),
  moved_in as (
    insert into pgxjob_run_at_jobs (
      id, inserted_at, run_at, next_run_at, group_id, type_id, error_count, last_error, params,
      priority, unique_key, trace_context
    )
    select m.id, m.inserted_at, m.run_at, m.next_run_at, m.group_id, m.type_id, 1, m.error,
      m.params, m.priority, m.unique_key, m.trace_context
    from moved m
    returning group_id
  ),
  retried as (
    update pgxjob_run_at_jobs j
    set error_count = j.error_count + 1,
        last_error = i.error,
        next_run_at = i.next_run_at,
        worker_id = null
    from decided i
    where j.id = any (array(select x.job_id from decided x where x.next_run_at is not null))
      and j.id = i.job_id
      and j.worker_id = p_worker_id
      and j.error_count = i.error_count
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.run_at, j.params, i.error_count,
      j.trace_context
  ),
  finished as (
    select id, type_id, unique_key from done_asap
    union all
    select id, type_id, unique_key from done_run_at
  ),
  freed as (
    -- A finished job gives its unique key back. Each key row is found through the primary key
    -- (one probe per finished job that holds a key) and deleted by its tuple id; a join to the
    -- CTE would let the planner hash the whole key table on every batch. Key rows are never
    -- updated, so a tuple id found here still names the row.
    delete from pgxjob_unique_keys k
    where k.ctid = any (array(
      select (
        select u.ctid
        from pgxjob_unique_keys u
        where u.type_id = f.type_id and u.unique_key = f.unique_key and u.job_id = f.id
      )
      from finished f
      where f.unique_key is not null
    ))
  ),
  touched as (
    select id, group_id, type_id, inserted_at, run_at, params, error_count, trace_context
    from done_asap
    union all
    select id, group_id, type_id, inserted_at, run_at, params, error_count, trace_context
    from done_run_at
    union all
    select id, group_id, type_id, inserted_at, run_at, params, error_count, trace_context
    from moved
    union all
    select id, group_id, type_id, inserted_at, run_at, params, error_count, trace_context
    from retried
  ),
  logged as (
    -- A run recorded twice keeps its first row, unless that row is a stale run's.
    insert into pgxjob_job_runs as r (
      job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at,
      params, error, outcome, output, trace_context
    )
    select t.id, least(t.error_count, 2147483646) + 1, t.group_id, t.type_id, t.inserted_at,
      t.run_at, i.started_at, i.finished_at, t.params, i.error,
      case
        when i.cancelled then 'cancelled'
        when not i.failed then 'succeeded'
        when i.next_run_at is null then 'failed'
        else 'retried'
      end,
      i.output, t.trace_context
    from touched t
    join decided i on i.job_id = t.id
    where i.log
    on conflict (job_id, run_number) do update
      set started_at = excluded.started_at, finished_at = excluded.finished_at,
          error = excluded.error, outcome = excluded.outcome, output = excluded.output
      where r.outcome = 'stale'
  ),
  stale as (
    select d.job_id, d.error_count, d.started_at, d.finished_at, d.error, d.output, d.log
    from decided d
    where d.job_id not in (select t.id from touched t)
  ),
  stale_logged as (
    -- A stale run is logged when its job still exists and its run number is free: the run
    -- happened, it just does not count.
    insert into pgxjob_job_runs (
      job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at,
      params, error, outcome, output, trace_context
    )
    select s.job_id, least(s.error_count, 2147483646) + 1, j.group_id, j.type_id, j.inserted_at,
      j.run_at, s.started_at, s.finished_at, j.params, s.error, 'stale', s.output, j.trace_context
    from stale s
    join (
      select a.id, a.group_id, a.type_id, a.inserted_at, a.inserted_at as run_at, a.params,
        a.trace_context
      from pgxjob_asap_jobs a
      where a.id = any (p_job_ids)
      union all
      select b.id, b.group_id, b.type_id, b.inserted_at, b.run_at, b.params, b.trace_context
      from pgxjob_run_at_jobs b
      where b.id = any (p_job_ids)
    ) j on j.id = s.job_id
    where s.log
    on conflict (job_id, run_number) do nothing
  ),
  notified as (
    -- Workers of the groups of retried jobs move their wake-up to the new retry times.
    select pg_notify('pgxjob_timed_job_scheduled', g.name)
    from pgxjob_groups g
    where g.id in (select m.group_id from moved_in m union select r.group_id from retried r)
  )
  select
    (select count(*) from touched)::int,
    array(select s.job_id from stale s order by s.job_id),
    (select count(*) from notified)
  into changed, stale_job_ids, v_notified;
end;
$$;

-- The cancellation of 0005, whose run-log rows keep the job's trace context.
create or replace function pgxjob_finish_cancelled(p_job_ids bigint[], p_now timestamptz)
returns int
language plpgsql
volatile
called on null input
as $$
declare
  v_count int;
begin
  with gone_asap as (
    delete from pgxjob_asap_jobs j
    where j.id = any (p_job_ids)
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.inserted_at as run_at, j.params,
      0 as error_count, j.unique_key, j.trace_context
  ),
  gone_run_at as (
    delete from pgxjob_run_at_jobs j
    where j.id = any (p_job_ids)
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.run_at, j.params, j.error_count,
      j.unique_key, j.trace_context
  ),
  gone as (
    select * from gone_asap
    union all
    select * from gone_run_at
  ),
  freed as (
    -- Through the primary key, one probe per job, then by tuple id (see pgxjob_apply_job_results).
    delete from pgxjob_unique_keys k
    where k.ctid = any (array(
      select (
        select u.ctid
        from pgxjob_unique_keys u
        where u.type_id = g.type_id and u.unique_key = g.unique_key and u.job_id = g.id
      )
      from gone g
      where g.unique_key is not null
    ))
  ),
  logged as (
    insert into pgxjob_job_runs (
      job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at,
      params, error, outcome, trace_context
    )
    select g.id, least(g.error_count, 2147483646) + 1, g.group_id, g.type_id, g.inserted_at,
      g.run_at, p_now, p_now, g.params, null, 'cancelled', g.trace_context
    from gone g
    on conflict (job_id, run_number) do nothing
  )
  select count(*) into v_count from gone;

  return v_count;
end;
$$;

-- The job document of 0008, with the trace context of the job and of each run.
create or replace function pgxjob_job_detail(job_id bigint, p_now timestamptz default now())
returns json
language plpgsql
stable
called on null input
as $$
#variable_conflict use_variable
declare
  v_now timestamptz := coalesce(p_now, now());
  v_job json;
  v_runs json;
begin
  select json_build_object(
    'id', j.id,
    'state', case
      when j.worker_id is not null then 'running'
      when j.asap then 'waiting'
      when j.next_run_at <= v_now then 'due'
      when j.error_count > 0 then 'retrying'
      else 'scheduled'
    end,
    'group_name', g.name,
    'job_type', t.name,
    'type_id', j.type_id,
    'params', j.params,
    'inserted_at', j.inserted_at,
    'run_at', j.run_at,
    'next_run_at', j.next_run_at,
    'error_count', j.error_count,
    'last_error', j.last_error,
    'priority', j.priority,
    'unique_key', j.unique_key,
    'cancel_requested', j.cancel_requested,
    'worker_id', j.worker_id,
    'worker_host', w.host,
    'worker_pid', w.pid,
    'trace_context', j.trace_context
  )
  into v_job
  from (
    select a.id, true as asap, a.group_id, a.type_id, a.params, a.inserted_at,
      a.inserted_at as run_at, a.inserted_at as next_run_at, 0 as error_count,
      null::text as last_error, a.priority, a.unique_key, a.cancel_requested, a.worker_id,
      a.trace_context
    from pgxjob_asap_jobs a
    where a.id = job_id
    union all
    select r.id, false, r.group_id, r.type_id, r.params, r.inserted_at, r.run_at, r.next_run_at,
      r.error_count, r.last_error, r.priority, r.unique_key, r.cancel_requested, r.worker_id,
      r.trace_context
    from pgxjob_run_at_jobs r
    where r.id = job_id
  ) j
  join pgxjob_groups g on g.id = j.group_id
  left join pgxjob_job_types t on t.id = j.type_id
  left join pgxjob_workers w on w.id = j.worker_id;

  select json_agg(json_build_object(
    'run_number', r.run_number,
    'group_name', g.name,
    'job_type', t.name,
    'inserted_at', r.inserted_at,
    'run_at', r.run_at,
    'started_at', r.started_at,
    'finished_at', r.finished_at,
    'params', r.params,
    'error', r.error,
    'outcome', r.outcome,
    'output', r.output,
    'trace_context', r.trace_context
  ) order by r.run_number)
  into v_runs
  from pgxjob_job_runs r
  join pgxjob_groups g on g.id = r.group_id
  left join pgxjob_job_types t on t.id = r.type_id
  where r.job_id = job_id;

  if v_job is null and v_runs is null then
    return null;
  end if;
  return json_build_object('job', v_job, 'runs', coalesce(v_runs, '[]'::json));
end;
$$;

-- The retry of 0008: the new job continues the trace of the failed run, so the retry shows in
-- the same trace as the attempts it repeats.
create or replace function pgxjob_retry_job_run(job_id bigint, run_number int default null)
returns bigint
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_variable
declare
  v_run record;
begin
  select r.type_id, r.group_id, g.name as group_name, r.params, r.outcome, r.run_number,
    r.trace_context
  into v_run
  from pgxjob_job_runs r
  join pgxjob_groups g on g.id = r.group_id
  where r.job_id = job_id
    and (run_number is null or r.run_number = run_number)
  order by r.run_number desc
  limit 1;

  if not found then
    raise exception 'pgxjob: job % has no run %', job_id, coalesce(run_number::text, 'logged')
      using errcode = 'PJ005',
            hint = 'Pass the job id and run number of a failed run; pgxjob runs --failed lists them.';
  end if;
  if v_run.outcome is distinct from 'failed' then
    raise exception 'pgxjob: run % of job % did not fail for good (its outcome is %)',
      v_run.run_number, job_id, coalesce(v_run.outcome, 'not recorded')
      using errcode = 'PJ005',
            hint = 'Only a failed run can be retried; a retried job runs again on its own.';
  end if;

  return pgxjob_insert_job(v_run.type_id, v_run.group_id, v_run.group_name, v_run.params, null,
                           0, null, v_run.trace_context);
end;
$$;

-- Into the private schema, with wrappers for the public ones, then the grants of before.
do $$
declare
  v_api name := current_schema();
  v_grant record;
begin
  for v_grant in select g.function_name, g.role_name from pgxjob_0009_grants g order by 1, 2 loop
    execute format('grant execute on function %I.%I to %I', v_api, v_grant.function_name,
                   v_grant.role_name);
  end loop;

  execute format('select %I.pgxjob_publish_functions($1, $2, $3, $4)', 'pgxjob_' || v_api)
  using v_api, 'pgxjob_' || v_api,
    array['pgxjob_check_trace_context', 'pgxjob_insert_job', 'pgxjob_finish_cancelled',
          'pgxjob_apply_job_results'],
    array['pgxjob_check_trace_context'];
end;
$$;

drop table pgxjob_0009_grants;
