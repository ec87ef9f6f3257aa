-- Job control: priorities, unique keys, cancellation, and an outcome and output per run. Adds
-- columns (no table rewrite: constant defaults), a table of unique keys, and fetch indexes that
-- order by priority; takes SHARE locks on the hot tables while those indexes are built, so
-- producers wait for that long.
--
-- The global lock order of 0004 gains one step: after the timed jobs, unique-key rows; run-log
-- rows stay last.

-- The implementation lives in the private schema; this file runs with the install schema first on
-- the search_path (the Python migrator and psql alike), so the private one is added after it.
-- Session-level, so that it holds for every statement under psql too; the Python migrator
-- restores the session's search_path afterwards.
select pg_catalog.set_config(
  'search_path',
  pg_catalog.format('%I, %I, pg_temp', pg_catalog.current_schema(),
                    'pgxjob_' || pg_catalog.current_schema()),
  false
);

insert into pgxjob_schema_migrations (version, name)
values (5, 'job_control')
on conflict (version) do nothing;

-- Who may call what, before the functions whose signatures change are dropped (a drop takes its
-- grants with it); granted again at the end.
create temp table pgxjob_0005_grantees as
select distinct pg_catalog.pg_get_userbyid(a.grantee) as role_name,
  case when p.proname = 'pgxjob_fetch_jobs' then 'worker' else 'application' end as kind
from pg_catalog.pg_proc p
cross join lateral pg_catalog.aclexplode(p.proacl) a
where p.pronamespace = (select n.oid from pg_catalog.pg_namespace n
                        where n.nspname = pg_catalog.current_schema())
  and p.proname in ('pgxjob_fetch_jobs', 'pgxjob_schedule')
  and a.privilege_type = 'EXECUTE' and a.grantee <> 0;

-- Priority: higher runs first among the due jobs of a group. Retries keep it.
alter table pgxjob_asap_jobs
  add column priority int not null default 0,
  add column unique_key text,
  add column cancel_requested boolean not null default false;
alter table pgxjob_run_at_jobs
  add column priority int not null default 0,
  add column unique_key text,
  add column cancel_requested boolean not null default false;

-- Fetch reads unowned jobs of one group, highest priority first: ASAP jobs then in id order; due
-- timed jobs, per priority, in next_run_at order (one range scan per priority level present).
-- Partial, so claimed jobs are not in them. The timed (group_id, next_run_at) index stays for
-- pgxjob_next_run_in's one-entry probe.
drop index pgxjob_asap_jobs_fetch_idx;
create index pgxjob_asap_jobs_fetch_idx on pgxjob_asap_jobs (group_id, priority desc, id)
  where worker_id is null;
create index pgxjob_run_at_jobs_priority_fetch_idx
  on pgxjob_run_at_jobs (group_id, priority desc, next_run_at)
  where worker_id is null;

-- A unique key is held by one job at a time, across both hot tables (a retried ASAP job moves
-- between them, so a unique index on either table could not do it). The row exists from the
-- job's scheduling until it finishes or is cancelled; a second producer's insert waits for the
-- first's transaction, then finds its job or, after a rollback, takes the key itself.
create table pgxjob_unique_keys (
  type_id int not null,
  unique_key text not null,
  job_id bigint not null,
  constraint pgxjob_unique_keys_pkey primary key (type_id, unique_key)
);

-- The run log says how each run ended, and keeps what the handler returned.
alter table pgxjob_job_runs
  add column outcome text,
  add column output json,
  add constraint pgxjob_job_runs_outcome_known
    check (outcome in ('succeeded', 'failed', 'retried', 'cancelled', 'stale'));

-- Raises PJ005 unless p_key is a usable unique key: null (none) or at most 1000 bytes.
create function pgxjob_check_unique_key(p_key text)
returns void
language plpgsql
immutable
called on null input
as $$
begin
  if octet_length(p_key) > 1000 then
    raise exception 'pgxjob: unique_key is % bytes long in UTF-8, more than 1000',
      octet_length(p_key)
      using errcode = 'PJ005',
            hint = 'Use a shorter key, for example a hash of the values that make the job unique.';
  end if;
end;
$$;

-- Inserts one job, or returns the id of the job that holds its unique key. Shared by
-- pgxjob_schedule (after its lookup) and pgxjob_schedule_many (for jobs with keys).
create function pgxjob_insert_job(
  p_type_id int,
  p_group_id int,
  p_group_name text,
  p_params json,
  p_run_at timestamptz,
  p_priority int,
  p_unique_key text
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
    insert into pgxjob_asap_jobs (id, group_id, type_id, params, priority, unique_key)
    values (v_id, p_group_id, p_type_id, p_params, coalesce(p_priority, 0), p_unique_key);

    perform pg_notify('pgxjob_job_available', p_group_name);
  else
    insert into pgxjob_run_at_jobs (
      id, run_at, next_run_at, group_id, type_id, params, priority, unique_key
    )
    values (
      v_id, p_run_at, p_run_at, p_group_id, p_type_id, p_params, coalesce(p_priority, 0),
      p_unique_key
    );

    -- Lets idle workers of the group move their wake-up earlier (one per group per transaction).
    perform pg_notify('pgxjob_timed_job_scheduled', p_group_name);
  end if;

  return v_id;
end;
$$;

-- The functions whose signatures change: their wrapper in the install schema and their
-- implementation in the private one.
do $$
declare
  v_fn text;
begin
  foreach v_fn in array array[
    'pgxjob_schedule(text, json, text, timestamptz)',
    'pgxjob_schedule_many(text, json[], text, timestamptz)',
    'pgxjob_fetch_jobs(int, int, timestamptz)',
    'pgxjob_record_job_results(int, bigint[], int[], timestamptz[], timestamptz[], text[], '
      'timestamptz[], int[], interval[], boolean[], timestamptz)',
    'pgxjob_recent_job_runs(int, boolean, text, text)'
  ] loop
    execute format('drop function %I.%s', current_schema(), v_fn);
    execute format('drop function %I.%s', 'pgxjob_' || current_schema(), v_fn);
  end loop;

  -- Internal: no wrapper.
  execute format('drop function %I.pgxjob_apply_job_results(int, bigint[], int[], timestamptz[], '
                 'timestamptz[], text[], timestamptz[], int[], interval[], boolean[], '
                 'timestamptz)', 'pgxjob_' || current_schema());
end;
$$;

-- The public enqueue function. Runs in the caller's transaction: a rollback leaves no job and
-- sends no notification. A run_at that is null or not in the future makes an ASAP job. Higher
-- priority runs first among the group's due jobs. With a unique_key, while a job of the same type
-- holds the key (waiting, scheduled, retrying or running), the existing job's id is returned and
-- nothing is written or notified.
create function pgxjob_schedule(
  job_type text,
  params json default null,
  group_name text default null,
  run_at timestamptz default null,
  priority int default 0,
  unique_key text default null
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

  return pgxjob_insert_job(v_type_id, v_group_id, v_group_name, params, run_at, priority,
                           unique_key);
end;
$$;

-- Bulk enqueue: one job per element of params, all of one type, group, run_at and priority, in one
-- statement when no unique keys are given. unique_keys, when given, has one key (or null) per
-- element of params; a job whose key is held returns the holder's id in its place. Returns the ids
-- in the order of params.
create function pgxjob_schedule_many(
  job_type text,
  params json[],
  group_name text default null,
  run_at timestamptz default null,
  priority int default 0,
  unique_keys text[] default null
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
        v_target.resolved_group_name, params[v_i], run_at, priority, unique_keys[v_i]);
    end loop;
    return;
  end if;

  if run_at is null or run_at <= now() then
    return query
    insert into pgxjob_asap_jobs (group_id, type_id, params, priority)
    select v_target.group_id, v_target.type_id, p.params, coalesce(priority, 0)
    from unnest(params) with ordinality as p(params, ord)
    order by p.ord
    returning id;

    perform pg_notify('pgxjob_job_available', v_target.resolved_group_name);
  else
    return query
    insert into pgxjob_run_at_jobs (run_at, next_run_at, group_id, type_id, params, priority)
    select run_at, run_at, v_target.group_id, v_target.type_id, p.params, coalesce(priority, 0)
    from unnest(params) with ordinality as p(params, ord)
    order by p.ord
    returning id;

    perform pg_notify('pgxjob_timed_job_scheduled', v_target.resolved_group_name);
  end if;
end;
$$;

-- Finishes the given waiting or released jobs as cancelled: deletes them, frees their unique keys
-- and logs one run each with outcome 'cancelled'. The caller holds their row locks. Returns how
-- many were cancelled.
create function pgxjob_finish_cancelled(p_job_ids bigint[], p_now timestamptz)
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
      0 as error_count, j.unique_key
  ),
  gone_run_at as (
    delete from pgxjob_run_at_jobs j
    where j.id = any (p_job_ids)
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.run_at, j.params, j.error_count,
      j.unique_key
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
      params, error, outcome
    )
    select g.id, least(g.error_count, 2147483646) + 1, g.group_id, g.type_id, g.inserted_at,
      g.run_at, p_now, p_now, g.params, null, 'cancelled'
    from gone g
    on conflict (job_id, run_number) do nothing
  )
  select count(*) into v_count from gone;

  return v_count;
end;
$$;

-- Cancels a job. A waiting job (ASAP, timed, or waiting to retry) is removed and gets a run-log row
-- with outcome 'cancelled': returns 'cancelled'. A job owned by a worker (running, or prefetched
-- and about to run) gets a cancel request: its worker is notified on pgxjob_job_cancel (payload
-- "<worker id> <job id>") and, when its handler returns or raises, the job is finished as
-- cancelled and not retried: returns 'cancel_requested'. A job that does not exist (unknown, or
-- finished) returns 'not_found'.
create function pgxjob_cancel_job(job_id bigint, p_now timestamptz default now())
returns text
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_column
declare
  v_worker_id int;
  v_found boolean := false;
begin
  -- Lock order: the ASAP row, then the timed row (a job is in one of them).
  select j.worker_id, true into v_worker_id, v_found
  from pgxjob_asap_jobs j
  where j.id = pgxjob_cancel_job.job_id
  for update;

  if not found then
    select j.worker_id, true into v_worker_id, v_found
    from pgxjob_run_at_jobs j
    where j.id = pgxjob_cancel_job.job_id
    for update;
  end if;

  if not coalesce(v_found, false) then
    return 'not_found';
  end if;

  if v_worker_id is null then
    perform pgxjob_finish_cancelled(array[pgxjob_cancel_job.job_id], coalesce(p_now, now()));
    return 'cancelled';
  end if;

  update pgxjob_asap_jobs j set cancel_requested = true where j.id = pgxjob_cancel_job.job_id;
  update pgxjob_run_at_jobs j set cancel_requested = true where j.id = pgxjob_cancel_job.job_id;
  perform pg_notify('pgxjob_job_cancel', v_worker_id || ' ' || pgxjob_cancel_job.job_id);
  return 'cancel_requested';
end;
$$;

-- The jobs the worker owns that have a cancel request: the poll fallback for a worker that missed
-- the notification (its listener was reconnecting, or it runs without LISTEN).
create function pgxjob_cancel_requests(p_worker_id int)
returns setof bigint
language plpgsql
stable
called on null input
as $$
begin
  return query
  select j.id from pgxjob_asap_jobs j where j.worker_id = p_worker_id and j.cancel_requested
  union all
  select j.id from pgxjob_run_at_jobs j where j.worker_id = p_worker_id and j.cancel_requested
  order by 1;
end;
$$;

-- Releases the jobs owned by the given workers, except those in p_keep, locking them in the global
-- order (ASAP jobs, then timed jobs, each in id order). A released job with a cancel request is
-- finished as cancelled instead: its handler is gone, and it must not run again. Returns how many
-- jobs were released.
create or replace function pgxjob_release_jobs_of(p_worker_ids int[], p_keep bigint[])
returns int
language plpgsql
volatile
called on null input
as $$
declare
  v_asap int;
  v_timed int;
  v_cancelled bigint[];
begin
  with locked as (
    select a.id, a.cancel_requested
    from pgxjob_asap_jobs a
    where a.worker_id = any (p_worker_ids)
      and not (a.id = any (coalesce(p_keep, '{}')))
    order by a.id
    for update
  ),
  released as (
    update pgxjob_asap_jobs j
    set worker_id = null
    from locked l
    where j.id = l.id
      and not l.cancel_requested
    returning j.id
  )
  select (select count(*) from released),
    array(select l.id from locked l where l.cancel_requested)
  into v_asap, v_cancelled;

  with locked as (
    select a.id, a.cancel_requested
    from pgxjob_run_at_jobs a
    where a.worker_id = any (p_worker_ids)
      and not (a.id = any (coalesce(p_keep, '{}')))
    order by a.id
    for update
  ),
  released as (
    update pgxjob_run_at_jobs j
    set worker_id = null
    from locked l
    where j.id = l.id
      and not l.cancel_requested
    returning j.id
  )
  select (select count(*) from released),
    v_cancelled || array(select l.id from locked l where l.cancel_requested)
  into v_timed, v_cancelled;

  if cardinality(v_cancelled) > 0 then
    perform pgxjob_finish_cancelled(v_cancelled, now());
  end if;

  return v_asap + v_timed;
end;
$$;

-- Claims up to p_limit jobs of the worker's group for the worker. Among the group's due jobs the
-- highest priority goes first; within a priority, due time (an ASAP job is due from its insertion,
-- a timed job from next_run_at), then id: so a stream of due retries cannot starve ASAP jobs. A
-- prefetching worker takes the highest first, so a job of higher priority scheduled later waits at
-- most for the jobs that worker already holds (max_prefetched_jobs bounds the inversion). Returns
-- zero rows when idle. Raises PJ004 when the worker row is gone. A job whose type row is gone
-- comes back with a null type_name; the worker fails it with an error naming the type id.
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
  cancel_requested boolean
)
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_column
declare
  v_now timestamptz := coalesce(p_now, now());
  v_group_id int;
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
  -- releases what it claimed; without it the claim could land on a worker already reaped.
  select w.group_id into v_group_id
  from pgxjob_workers w
  where w.id = p_worker_id
  for key share;

  if v_group_id is null then
    raise exception 'pgxjob: worker % is not registered', p_worker_id
      using errcode = 'PJ004',
            hint = 'The worker was reaped or unregistered; register it again.';
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
      j.last_error, false as is_asap, j.priority, j.cancel_requested, j.next_run_at as due_at
  ),
  claimed_asap as (
    update pgxjob_asap_jobs j
    set worker_id = p_worker_id
    where j.id = any (v_asap)
    returning j.id, j.group_id, j.type_id, j.params, j.inserted_at, j.inserted_at as run_at,
      0 as error_count, null::text as last_error, true as is_asap, j.priority,
      j.cancel_requested, j.inserted_at as due_at
  ),
  claimed as (
    select * from claimed_timed
    union all
    select * from claimed_asap
  )
  select c.id, c.group_id, c.type_id, t.name, c.params, c.inserted_at, c.run_at, c.error_count,
    c.last_error, c.is_asap, c.priority, c.cancel_requested
  from claimed c
  left join pgxjob_job_types t on t.id = c.type_id
  order by c.priority desc, c.due_at, c.id;
end;
$$;

-- Applies a batch of results of one worker in one statement; see pgxjob_record_job_results.
-- Returns how many jobs changed and the ids of the stale results. Raises if any row cannot be
-- applied; the caller then goes row by row.
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
      0 as error_count, j.unique_key
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
      j.unique_key
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
      0 as error_count, i.next_run_at, i.error, j.priority, j.unique_key
  ),
  moved_in as (
    insert into pgxjob_run_at_jobs (
      id, inserted_at, run_at, next_run_at, group_id, type_id, error_count, last_error, params,
      priority, unique_key
    )
    select m.id, m.inserted_at, m.run_at, m.next_run_at, m.group_id, m.type_id, 1, m.error,
      m.params, m.priority, m.unique_key
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
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.run_at, j.params, i.error_count
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
    select id, group_id, type_id, inserted_at, run_at, params, error_count from done_asap
    union all
    select id, group_id, type_id, inserted_at, run_at, params, error_count from done_run_at
    union all
    select id, group_id, type_id, inserted_at, run_at, params, error_count from moved
    union all
    select id, group_id, type_id, inserted_at, run_at, params, error_count from retried
  ),
  logged as (
    -- A run recorded twice keeps its first row, unless that row is a stale run's.
    insert into pgxjob_job_runs as r (
      job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at,
      params, error, outcome, output
    )
    select t.id, least(t.error_count, 2147483646) + 1, t.group_id, t.type_id, t.inserted_at,
      t.run_at, i.started_at, i.finished_at, t.params, i.error,
      case
        when i.cancelled then 'cancelled'
        when not i.failed then 'succeeded'
        when i.next_run_at is null then 'failed'
        else 'retried'
      end,
      i.output
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
      params, error, outcome, output
    )
    select s.job_id, least(s.error_count, 2147483646) + 1, j.group_id, j.type_id, j.inserted_at,
      j.run_at, s.started_at, s.finished_at, j.params, s.error, 'stale', s.output
    from stale s
    join (
      select a.id, a.group_id, a.type_id, a.inserted_at, a.inserted_at as run_at, a.params
      from pgxjob_asap_jobs a
      where a.id = any (p_job_ids)
      union all
      select b.id, b.group_id, b.type_id, b.inserted_at, b.run_at, b.params
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

-- Records a batch of finished runs of one worker. Array i of every argument describes run i:
--   p_job_ids, p_error_counts   the job and the error_count it had when it ran (run_number - 1);
--   p_started_at, p_finished_at when the handler ran;
--   p_errors                    null for success, else the error text;
--   p_retry_at                  an explicit retry time, or null;
--   p_backoff_max_retries,
--   p_backoff_base_delays       a linear backoff to compute the retry time on this clock, or null;
--   p_log                       whether to write a run-log row;
--   p_outputs                   what the handler returned, as json, or null;
--   p_cancelled                 whether the handler stopped because the job was cancelled.
-- A success, a failure without a retry time, or a cancellation (asked by the handler or by
-- pgxjob_cancel_job) deletes the job and frees its unique key. A retry keeps the job's id: an
-- ASAP job moves to the timed table, a timed job is updated; either way it is released. A result
-- counts only while the job is owned by p_worker_id; the others are stale, change nothing, are
-- logged with outcome 'stale' where their run number is free, and their ids are returned. A row
-- that cannot be applied as asked (a retry time out of range, an error_count at its largest
-- value) is recorded as a final failure whose error says why; the rest of the batch is recorded
-- all the same.
create function pgxjob_record_job_results(
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
  p_outputs json[] default null,
  p_cancelled boolean[] default null,
  p_now timestamptz default now()
)
returns table (changed int, stale_job_ids bigint[])
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_column
declare
  v_n int := coalesce(cardinality(p_job_ids), 0);
  v_now timestamptz := coalesce(p_now, now());
  v_outputs json[] := coalesce(p_outputs, array_fill(null::json, array[v_n]));
  v_cancelled boolean[] := coalesce(p_cancelled, array_fill(false, array[v_n]));
  v_changed int := 0;
  v_stale bigint[] := '{}';
  v_row record;
  v_reason text;
begin
  if p_worker_id is null then
    raise exception 'pgxjob: the reporting worker''s id must not be null'
      using errcode = 'PJ005',
            hint = 'Pass the id the worker had when it fetched the jobs.';
  end if;

  if v_n = 0 then
    return query select 0, '{}'::bigint[];
    return;
  end if;

  if coalesce(cardinality(p_error_counts), -1) <> v_n
    or coalesce(cardinality(p_started_at), -1) <> v_n
    or coalesce(cardinality(p_finished_at), -1) <> v_n
    or coalesce(cardinality(p_errors), -1) <> v_n
    or coalesce(cardinality(p_retry_at), -1) <> v_n
    or coalesce(cardinality(p_backoff_max_retries), -1) <> v_n
    or coalesce(cardinality(p_backoff_base_delays), -1) <> v_n
    or coalesce(cardinality(p_log), -1) <> v_n
    or coalesce(cardinality(v_outputs), -1) <> v_n
    or coalesce(cardinality(v_cancelled), -1) <> v_n
    or array_ndims(p_job_ids) <> 1
  then
    raise exception 'pgxjob: result arrays must all have % elements', v_n
      using errcode = 'PJ005',
            hint = 'Pass one element per job in every array.';
  end if;

  if array_position(p_job_ids, null) is not null
    or array_position(p_error_counts, null) is not null
    or array_position(p_started_at, null) is not null
    or array_position(p_finished_at, null) is not null
    or array_position(p_log, null) is not null
    or exists (select 1 from unnest(p_error_counts) e where e < 0)
  then
    raise exception 'pgxjob: job ids, error counts, start and finish times and log flags must '
      'not be null, and error counts not negative'
      using errcode = 'PJ005',
            hint = 'Pass a value for every job in those arrays.';
  end if;

  begin
    select * into v_row
    from pgxjob_apply_job_results(
      p_worker_id, p_job_ids, p_error_counts, p_started_at, p_finished_at, p_errors, p_retry_at,
      p_backoff_max_retries, p_backoff_base_delays, p_log, v_outputs, v_cancelled, v_now
    );
    return query select v_row.changed, v_row.stale_job_ids;
    return;
  exception
    when data_exception or integrity_constraint_violation or program_limit_exceeded then
      -- Some row cannot be applied: go row by row below, so that only that row is changed.
      null;
  end;

  for i in 1 .. v_n loop
    begin
      select * into v_row
      from pgxjob_apply_job_results(
        p_worker_id, array[p_job_ids[i]], array[p_error_counts[i]], array[p_started_at[i]],
        array[p_finished_at[i]], array[p_errors[i]], array[p_retry_at[i]],
        array[p_backoff_max_retries[i]], array[p_backoff_base_delays[i]], array[p_log[i]],
        array[v_outputs[i]], array[v_cancelled[i]], v_now
      );
    exception
      when data_exception or integrity_constraint_violation or program_limit_exceeded then
        get stacked diagnostics v_reason = message_text;
        -- Recorded as a final failure that says why, without its output. If even that fails,
        -- the error propagates and the caller sets this row aside.
        select * into v_row
        from pgxjob_apply_job_results(
          p_worker_id, array[p_job_ids[i]], array[p_error_counts[i]], array[p_started_at[i]],
          array[p_finished_at[i]],
          array[coalesce(p_errors[i] || E'\n', '') || format(
            '(pgxjob: this result could not be recorded as asked (%s); recorded as a final '
            'failure)', v_reason)],
          array[null::timestamptz], array[null::int], array[null::interval], array[p_log[i]],
          array[null::json], array[v_cancelled[i]], v_now
        );
    end;
    v_changed := v_changed + v_row.changed;
    v_stale := v_stale || v_row.stale_job_ids;
  end loop;

  return query select v_changed, v_stale;
end;
$$;

-- The newest runs first, filtered by job, type, group, or failures only; with each run's outcome
-- and output. Without of_job it searches the last hour, day and 30 days before the whole log, so
-- it stays fast on a large run log whose only time index is BRIN on finished_at; with of_job it
-- reads that job's runs through the primary key.
create function pgxjob_recent_job_runs(
  max_rows int default 20,
  failed_only boolean default false,
  of_type text default null,
  in_group text default null,
  of_job bigint default null
)
returns table (
  job_id bigint,
  run_number int,
  group_name text,
  job_type text,
  inserted_at timestamptz,
  run_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  params json,
  error text,
  outcome text,
  output json
)
language plpgsql
stable
called on null input
as $$
#variable_conflict use_column
declare
  v_type_id int;
  v_group_id int;
  v_failed_only boolean := coalesce(failed_only, false);
  v_since timestamptz;
  v_found int;
begin
  if max_rows is null or max_rows < 1 then
    raise exception 'pgxjob: max_rows must be a positive number, got %', max_rows
      using errcode = 'PJ005',
            hint = 'Pass how many runs to return, for example 20.';
  end if;

  if of_type is not null then
    select t.id into v_type_id from pgxjob_job_types t where t.name = of_type;
    if v_type_id is null then
      raise exception 'pgxjob: unknown job type "%"', of_type
        using errcode = 'PJ001',
              hint = 'Pass the name of a registered job type, or null for every type.';
    end if;
  end if;

  if in_group is not null then
    select g.id into v_group_id from pgxjob_groups g where g.name = in_group;
    if v_group_id is null then
      raise exception 'pgxjob: unknown group "%"', in_group
        using errcode = 'PJ002',
              hint = 'Pass the name of a registered group, or null for every group.';
    end if;
  end if;

  foreach v_since in array array[
    now() - interval '1 hour', now() - interval '1 day', now() - interval '30 days', null
  ] loop
    if v_since is not null and of_job is null then
      select count(*) into v_found
      from (
        select 1
        from pgxjob_job_runs r
        where r.finished_at >= v_since
          and (v_type_id is null or r.type_id = v_type_id)
          and (v_group_id is null or r.group_id = v_group_id)
          and (not v_failed_only or r.error is not null)
        limit max_rows
      ) enough;
      continue when v_found < max_rows;
    elsif v_since is not null then
      continue;
    end if;

    return query
    select r.job_id, r.run_number, g.name, t.name, r.inserted_at, r.run_at, r.started_at,
      r.finished_at, r.params, r.error, r.outcome, r.output
    from pgxjob_job_runs r
    join pgxjob_groups g on g.id = r.group_id
    join pgxjob_job_types t on t.id = r.type_id
    where (v_since is null or r.finished_at >= v_since)
      and (of_job is null or r.job_id = of_job)
      and (v_type_id is null or r.type_id = v_type_id)
      and (v_group_id is null or r.group_id = v_group_id)
      and (not v_failed_only or r.error is not null)
    order by r.finished_at desc, r.job_id desc, r.run_number desc
    limit max_rows;
    return;
  end loop;
end;
$$;

-- The grants: cancelling joins scheduling for applications, and workers poll cancel requests.
create or replace function pgxjob_grant_application(role_name name)
returns setof text
language sql
volatile
called on null input
as $$
  select pgxjob_grant_privileges(
    role_name,
    array['pgxjob_schedule', 'pgxjob_schedule_many', 'pgxjob_cancel_job'],
    array[]::text[]
  )
$$;

create or replace function pgxjob_grant_worker(role_name name)
returns setof text
language sql
volatile
called on null input
as $$
  select pgxjob_grant_privileges(
    role_name,
    array[
      'pgxjob_register_group', 'pgxjob_register_job_type',
      'pgxjob_schedule', 'pgxjob_schedule_many', 'pgxjob_cancel_job', 'pgxjob_cancel_requests',
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

-- Into the private schema, with wrappers for the public ones, then the grants of before.
do $$
declare
  v_api name := current_schema();
  v_grantee record;
begin
  -- Tables are created in the install schema (first on the search_path) and moved.
  execute format('alter table %I.pgxjob_unique_keys set schema %I', v_api, 'pgxjob_' || v_api);

  execute format('select %I.pgxjob_publish_functions($1, $2, $3, $4)', 'pgxjob_' || v_api)
  using v_api, 'pgxjob_' || v_api,
    array['pgxjob_check_unique_key', 'pgxjob_insert_job', 'pgxjob_finish_cancelled',
          'pgxjob_release_jobs_of', 'pgxjob_apply_job_results'],
    array['pgxjob_grant_application', 'pgxjob_grant_worker', 'pgxjob_check_unique_key'];

  for v_grantee in select g.role_name, g.kind from pgxjob_0005_grantees g order by 1, 2 loop
    execute format('select count(*) from %I.%I(%L)', v_api,
                   case v_grantee.kind when 'worker' then 'pgxjob_grant_worker'
                                       else 'pgxjob_grant_application' end,
                   v_grantee.role_name);
  end loop;
end;
$$;

drop table pgxjob_0005_grantees;
