-- Read-only monitoring functions for `pgxjob status`, `pgxjob runs` and psql users, so that no
-- table is queried from Python. Creates functions only; takes no lock on any table. Every function
-- reads with plain MVCC snapshots (no row locks), so monitoring never blocks workers or producers.

-- Jobs per group and type, in four disjoint states whose sum is every job in the hot tables:
--   due        unclaimed and ready to run now (ASAP jobs, and timed jobs whose time has come);
--   scheduled  unclaimed timed jobs whose first run is in the future;
--   retrying   unclaimed jobs that failed before and wait for their retry time;
--   locked     claimed by a worker: running, prefetched, or waiting for the worker's result
--              flush (a dead worker's jobs stay locked until it is reaped).
-- oldest_due_at is when the longest-waiting due job became due: now minus it is the queue's lag.
-- Every registered job type appears with its default group even when it has no jobs, so an idle
-- type reads as zeros instead of vanishing. Counting scans both hot tables; they stay small
-- because finished jobs are deleted.
create function pgxjob_job_counts(p_now timestamptz default now())
returns table (
  group_name text,
  job_type text,
  due bigint,
  scheduled bigint,
  retrying bigint,
  locked bigint,
  oldest_due_at timestamptz
)
language plpgsql
stable
strict
set search_path from current
as $$
begin
  return query
  with jobs as (
    select j.group_id, j.type_id, j.worker_id, true as is_due, 0 as error_count,
      j.inserted_at as due_at
    from pgxjob_asap_jobs j
    union all
    select j.group_id, j.type_id, j.worker_id, j.next_run_at <= p_now, j.error_count,
      j.next_run_at
    from pgxjob_run_at_jobs j
  ),
  counts as (
    select j.group_id, j.type_id,
      count(*) filter (where j.worker_id is null and j.is_due) as due,
      count(*) filter (where j.worker_id is null and not j.is_due and j.error_count = 0)
        as scheduled,
      count(*) filter (where j.worker_id is null and not j.is_due and j.error_count > 0)
        as retrying,
      count(*) filter (where j.worker_id is not null) as locked,
      min(j.due_at) filter (where j.worker_id is null and j.is_due) as oldest_due_at
    from jobs j
    group by j.group_id, j.type_id
  ),
  keys as (
    select t.default_group_id as group_id, t.id as type_id
    from pgxjob_job_types t
    union
    select c.group_id, c.type_id
    from counts c
  )
  select g.name, t.name, coalesce(c.due, 0), coalesce(c.scheduled, 0),
    coalesce(c.retrying, 0), coalesce(c.locked, 0), c.oldest_due_at
  from keys k
  join pgxjob_groups g on g.id = k.group_id
  join pgxjob_job_types t on t.id = k.type_id
  left join counts c on c.group_id = k.group_id and c.type_id = k.type_id
  order by g.name, t.name;
end;
$$;

-- Every registered worker with its heartbeat age and how many jobs it holds. alive uses the same
-- rule as pgxjob_reap_dead_workers: a worker is dead once heartbeat_at + dead_after < now. Jobs
-- are counted through the partial worker_id indexes, so a big backlog does not slow this down.
create function pgxjob_worker_status(p_now timestamptz default now())
returns table (
  worker_id int,
  group_name text,
  inserted_at timestamptz,
  heartbeat_at timestamptz,
  heartbeat_age interval,
  dead_after interval,
  alive boolean,
  locked_jobs bigint
)
language plpgsql
stable
strict
set search_path from current
as $$
begin
  return query
  select w.id, g.name, w.inserted_at, w.heartbeat_at, p_now - w.heartbeat_at, w.dead_after,
    w.heartbeat_at + w.dead_after >= p_now,
    (select count(*) from pgxjob_asap_jobs j where j.worker_id = w.id)
      + (select count(*) from pgxjob_run_at_jobs j where j.worker_id = w.id)
  from pgxjob_workers w
  join pgxjob_groups g on g.id = w.group_id
  order by g.name, w.id;
end;
$$;

-- The newest runs of the run log, newest first, optionally only failed runs, of one type or of
-- one group. An unknown type or group is an error (a typo would otherwise read as "no runs").
-- The log is append-only and can be huge; its only index is BRIN on finished_at, which cannot
-- serve "order by finished_at desc limit n" by itself. So the search looks back over widening
-- windows (an hour, a day, thirty days) that BRIN can narrow, and scans the whole log only when
-- those hold fewer than max_rows matching runs. A window is used only when it holds max_rows
-- matches, and every run outside it is older, so the result is the same as a plain top-n over
-- the whole log: it does not depend on the clock, which is why there is no p_now.
create function pgxjob_recent_job_runs(
  max_rows int default 20,
  failed_only boolean default false,
  of_type text default null,
  in_group text default null
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
  error text
)
language plpgsql
stable
called on null input
set search_path from current
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
    if v_since is not null then
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
    end if;

    return query
    select r.job_id, r.run_number, g.name, t.name, r.inserted_at, r.run_at, r.started_at,
      r.finished_at, r.params, r.error
    from pgxjob_job_runs r
    join pgxjob_groups g on g.id = r.group_id
    join pgxjob_job_types t on t.id = r.type_id
    where (v_since is null or r.finished_at >= v_since)
      and (v_type_id is null or r.type_id = v_type_id)
      and (v_group_id is null or r.group_id = v_group_id)
      and (not v_failed_only or r.error is not null)
    order by r.finished_at desc, r.job_id desc, r.run_number desc
    limit max_rows;
    return;
  end loop;
end;
$$;

-- What the run log says about the runs that finished at or after `since`, per group and type:
--   succeeded  runs without an error;
--   retried    failed runs after which the job ran again or still waits for its retry;
--   failed     failed runs that were final: the job is gone and never ran again;
--   avg_duration, p95_duration  how long the handler ran (finished_at - started_at);
--   avg_wait   from due time to start, over first attempts only (a retry's wait includes its
--              backoff, which would hide the queue's own lag).
-- A retry keeps the job id and adds run number + 1, and only a retrying job stays in the timed
-- table after a failed run; both checks go through primary keys. With log_final_job_runs only
-- final runs are logged, so retried reads zero.
create function pgxjob_job_run_stats(since timestamptz default now() - interval '1 hour')
returns table (
  group_name text,
  job_type text,
  runs bigint,
  succeeded bigint,
  retried bigint,
  failed bigint,
  avg_duration interval,
  p95_duration interval,
  avg_wait interval
)
language plpgsql
stable
strict
set search_path from current
as $$
begin
  return query
  with recent as (
    select r.*,
      r.error is not null and (
        exists (select 1 from pgxjob_run_at_jobs j where j.id = r.job_id)
        or exists (
          select 1
          from pgxjob_job_runs later
          where later.job_id = r.job_id
            and later.run_number > r.run_number
        )
      ) as was_retried
    from pgxjob_job_runs r
    where r.finished_at >= since
  )
  select g.name, t.name,
    count(*),
    count(*) filter (where r.error is null),
    count(*) filter (where r.was_retried),
    count(*) filter (where r.error is not null and not r.was_retried),
    avg(r.finished_at - r.started_at),
    percentile_cont(0.95) within group (order by r.finished_at - r.started_at),
    avg(r.started_at - r.run_at) filter (where r.run_number = 1)
  from recent r
  join pgxjob_groups g on g.id = r.group_id
  join pgxjob_job_types t on t.id = r.type_id
  group by g.name, t.name
  order by g.name, t.name;
end;
$$;

-- Everything `pgxjob status` shows, as one json document, in one round trip: the schema version,
-- the database clock, job counts (pgxjob_job_counts), workers (pgxjob_worker_status) and the
-- newest failed runs (pgxjob_recent_job_runs). Ages and intervals are in seconds so that
-- monitoring scripts need not parse PostgreSQL interval text.
create function pgxjob_status(recent_failures int default 5, p_now timestamptz default now())
returns json
language plpgsql
stable
strict
set search_path from current
as $$
begin
  return json_build_object(
    'schema_version', (select max(m.version) from pgxjob_schema_migrations m),
    'now', p_now,
    'jobs', coalesce((
      select json_agg(json_build_object(
        'group_name', c.group_name,
        'job_type', c.job_type,
        'due', c.due,
        'scheduled', c.scheduled,
        'retrying', c.retrying,
        'locked', c.locked,
        'oldest_due_at', c.oldest_due_at,
        'lag_seconds', extract(epoch from p_now - c.oldest_due_at)
      ) order by c.group_name, c.job_type)
      from pgxjob_job_counts(p_now) c
    ), '[]'::json),
    'workers', coalesce((
      select json_agg(json_build_object(
        'worker_id', w.worker_id,
        'group_name', w.group_name,
        'inserted_at', w.inserted_at,
        'heartbeat_at', w.heartbeat_at,
        'heartbeat_age_seconds', extract(epoch from w.heartbeat_age),
        'dead_after_seconds', extract(epoch from w.dead_after),
        'alive', w.alive,
        'locked_jobs', w.locked_jobs
      ) order by w.group_name, w.worker_id)
      from pgxjob_worker_status(p_now) w
    ), '[]'::json),
    'recent_failures', coalesce((
      select json_agg(json_build_object(
        'job_id', f.job_id,
        'run_number', f.run_number,
        'group_name', f.group_name,
        'job_type', f.job_type,
        'finished_at', f.finished_at,
        'error', f.error
      ) order by f.finished_at desc, f.job_id desc, f.run_number desc)
      from pgxjob_recent_job_runs(
        max_rows => greatest(recent_failures, 1),
        failed_only => true
      ) f
      where recent_failures > 0
    ), '[]'::json)
  );
end;
$$;
