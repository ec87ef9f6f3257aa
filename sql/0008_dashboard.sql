-- The dashboard and metrics: pausing a group, where workers run, and the read functions an
-- operator's page and a Prometheus scrape call. Adds nullable columns (no table rewrite) and
-- replaces pgxjob_fetch_jobs and pgxjob_next_run_in; takes no lock beyond the brief ACCESS
-- EXCLUSIVE of each ALTER TABLE.
--
-- Lock order: unchanged. The new actions lock one job row (ASAP table, then timed table) like
-- pgxjob_cancel_job, and pausing updates one group row, which no job function locks.

-- The implementation lives in the private schema; see 0005 for why the search_path is set here.
select pg_catalog.set_config(
  'search_path',
  pg_catalog.format('%I, %I, pg_temp', pg_catalog.current_schema(),
                    'pgxjob_' || pg_catalog.current_schema()),
  false
);

insert into pgxjob_schema_migrations (version, name)
values (8, 'dashboard')
on conflict (version) do nothing;

-- A paused group's fetches claim nothing; jobs a worker already holds still run.
alter table pgxjob_groups add column paused_at timestamptz;

-- Where a worker runs, for the operator looking for it (both null for a worker registered by an
-- older pgxjob).
alter table pgxjob_workers
  add column host text,
  add column pid int;

-- Records the host name and process id of a registered worker; returns p_worker_id, so that a
-- worker registers and describes itself in one statement.
create function pgxjob_describe_worker(p_worker_id int, p_host text, p_pid int)
returns int
language plpgsql
volatile
called on null input
as $$
begin
  update pgxjob_workers w
  set host = pg_catalog.left(p_host, 255),
      pid = p_pid
  where w.id = p_worker_id;
  return p_worker_id;
end;
$$;

-- The id of the named group; raises PJ002 naming it when there is none.
create function pgxjob_group_id(p_group_name text)
returns int
language plpgsql
stable
called on null input
as $$
declare
  v_id int;
begin
  select g.id into v_id from pgxjob_groups g where g.name = p_group_name;
  if v_id is null then
    raise exception 'pgxjob: unknown group "%"', p_group_name
      using errcode = 'PJ002',
            hint = 'Pass the name of a registered group; pgxjob status lists them.';
  end if;
  return v_id;
end;
$$;

-- Pauses a group: from the commit on, every fetch of its workers claims nothing and its periodic
-- schedules do not fire. Jobs a worker already holds still run. Returns true when the group was
-- running, false when it was paused already.
create function pgxjob_pause_group(group_name text)
returns boolean
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_variable
begin
  update pgxjob_groups g
  set paused_at = now()
  where g.id = pgxjob_group_id(group_name)
    and g.paused_at is null;
  return found;
end;
$$;

-- Resumes a paused group and wakes its idle workers (a notification on pgxjob_job_available).
-- Returns true when the group was paused, false when it was running.
create function pgxjob_resume_group(group_name text)
returns boolean
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_variable
begin
  update pgxjob_groups g
  set paused_at = null
  where g.id = pgxjob_group_id(group_name)
    and g.paused_at is not null;
  if not found then
    return false;
  end if;
  perform pg_notify('pgxjob_job_available', group_name);
  return true;
end;
$$;

-- The fetch of 0007, which claims nothing while the worker's group is paused.
create or replace function pgxjob_fetch_jobs(
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

-- The wake-up of 0007; null (nothing to wait for) while the worker's group is paused, so its idle
-- workers sleep until resumed rather than poll jobs they may not claim.
create or replace function pgxjob_next_run_in(p_worker_id int, p_now timestamptz default now())
returns interval
language plpgsql
stable
strict
as $$
declare
  v_group_id int;
  v_next timestamptz;
begin
  select w.group_id into v_group_id
  from pgxjob_workers w
  join pgxjob_groups g on g.id = w.group_id
  where w.id = p_worker_id
    and g.paused_at is null;
  if v_group_id is null then
    return null;
  end if;

  -- A job or schedule at 'infinity' never falls due. Each minimum is one index probe.
  select least(
    (select min(j.next_run_at)
     from pgxjob_run_at_jobs j
     where j.group_id = v_group_id
       and j.worker_id is null
       and j.next_run_at < 'infinity'),
    (select min(p.next_fire_at)
     from pgxjob_periodic_jobs p
     where p.group_id = v_group_id
       and p.next_fire_at < 'infinity')
  ) into v_next;

  if v_next is null then
    return null;
  elsif v_next = '-infinity' then
    return interval '0';
  end if;

  return make_interval(secs => greatest(-3.15e9, least(3.15e9,
    (extract(epoch from v_next) - extract(epoch from p_now))::double precision)));
end;
$$;

-- How many rows of one hot table (p_table: 'asap' or 'run_at') to sample, as a TABLESAMPLE
-- SYSTEM percentage: 100 (every row, exact) when it holds at most p_max_exact rows, else about
-- p_max_exact rows' worth of its pages. The test reads at most p_max_exact + 1 rows; the size of
-- the table comes from its pages on disk and the planner's rows per page, as the planner does.
create function pgxjob_sample_percent(p_table text, p_max_exact int)
returns double precision
language plpgsql
stable
called on null input
as $$
declare
  v_rel regclass;
  v_rows bigint;
  v_pages double precision;
  v_per_page double precision;
begin
  if p_table = 'asap' then
    v_rel := 'pgxjob_asap_jobs'::regclass;
    select count(*) into v_rows
    from (select 1 from pgxjob_asap_jobs j where j.worker_id is null limit p_max_exact + 1) s;
  else
    v_rel := 'pgxjob_run_at_jobs'::regclass;
    select count(*) into v_rows
    from (select 1 from pgxjob_run_at_jobs j where j.worker_id is null limit p_max_exact + 1) s;
  end if;
  if v_rows <= p_max_exact then
    return 100;
  end if;

  v_pages := pg_catalog.pg_relation_size(v_rel)
    / pg_catalog.current_setting('block_size')::double precision;
  select case when c.relpages > 0 and c.reltuples > 0 then c.reltuples / c.relpages else 50 end
  into v_per_page
  from pg_catalog.pg_class c
  where c.oid = v_rel;
  return greatest(0.01, least(100, 100.0 * p_max_exact / greatest(v_pages * v_per_page, 1)));
end;
$$;

-- Jobs per group and type by state, on p_now's clock: waiting (ASAP, not claimed), due (a timed
-- job or retry whose time has come, not claimed), scheduled (for later, retries included) and
-- running (claimed by a worker: running, or prefetched and about to). Every registered type
-- appears in its default group. Cheap with a million waiting jobs: running is counted through the
-- partial worker index (at most what workers prefetch), and a hot table with more than
-- p_max_exact unclaimed jobs is sampled (TABLESAMPLE SYSTEM, about p_max_exact rows) and its
-- counts scaled up, with estimated true on those rows.
create function pgxjob_job_overview(
  p_now timestamptz default now(),
  p_max_exact int default 20000
)
returns table (
  group_name text,
  job_type text,
  waiting bigint,
  due bigint,
  scheduled bigint,
  running bigint,
  estimated boolean
)
language plpgsql
stable
called on null input
as $$
#variable_conflict use_column
declare
  v_now timestamptz := coalesce(p_now, now());
  v_asap_pct double precision;
  v_timed_pct double precision;
begin
  if p_max_exact is null or p_max_exact < 1 then
    raise exception 'pgxjob: p_max_exact must be a positive number, got %', p_max_exact
      using errcode = 'PJ005',
            hint = 'Pass how many jobs to count exactly before sampling, for example 20000.';
  end if;
  v_asap_pct := pgxjob_sample_percent('asap', p_max_exact);
  v_timed_pct := pgxjob_sample_percent('run_at', p_max_exact);

  return query
  with waiting as (
    select j.group_id, j.type_id, pg_catalog.round(count(*) * 100 / v_asap_pct)::bigint as n
    from pgxjob_asap_jobs j tablesample system (v_asap_pct)
    where j.worker_id is null
    group by j.group_id, j.type_id
  ),
  timed as (
    select j.group_id, j.type_id,
      pg_catalog.round(count(*) filter (where j.next_run_at <= v_now) * 100 / v_timed_pct)::bigint
        as due,
      pg_catalog.round(count(*) filter (where j.next_run_at > v_now) * 100 / v_timed_pct)::bigint
        as scheduled
    from pgxjob_run_at_jobs j tablesample system (v_timed_pct)
    where j.worker_id is null
    group by j.group_id, j.type_id
  ),
  held as (
    select j.group_id, j.type_id, count(*) as n
    from (
      select a.group_id, a.type_id from pgxjob_asap_jobs a where a.worker_id is not null
      union all
      select r.group_id, r.type_id from pgxjob_run_at_jobs r where r.worker_id is not null
    ) j
    group by j.group_id, j.type_id
  ),
  keys as (
    select t.default_group_id as group_id, t.id as type_id from pgxjob_job_types t
    union select w.group_id, w.type_id from waiting w
    union select d.group_id, d.type_id from timed d
    union select h.group_id, h.type_id from held h
  )
  select g.name, coalesce(t.name, '<deleted job type id ' || k.type_id || '>'),
    coalesce(w.n, 0), coalesce(d.due, 0), coalesce(d.scheduled, 0), coalesce(h.n, 0),
    v_asap_pct < 100 or v_timed_pct < 100
  from keys k
  join pgxjob_groups g on g.id = k.group_id
  left join pgxjob_job_types t on t.id = k.type_id
  left join waiting w on w.group_id = k.group_id and w.type_id = k.type_id
  left join timed d on d.group_id = k.group_id and d.type_id = k.type_id
  left join held h on h.group_id = k.group_id and h.type_id = k.type_id
  order by g.name, 2;
end;
$$;

-- Per group: whether it is paused, when its oldest unclaimed due job became due, and its
-- workers by state: alive (heard from within two heartbeat periods, a fifth of dead_after
-- each), stale (silent longer, not dead yet) and dead (silent past dead_after, not reaped yet).
-- The oldest job costs one index probe per priority level present and one for timed jobs.
create function pgxjob_group_overview(p_now timestamptz default now())
returns table (
  group_name text,
  paused_at timestamptz,
  oldest_due_at timestamptz,
  workers_alive int,
  workers_stale int,
  workers_dead int
)
language plpgsql
stable
called on null input
as $$
#variable_conflict use_column
declare
  v_now timestamptz := coalesce(p_now, now());
  v_group record;
  v_priority int;
  v_at timestamptz;
  v_oldest timestamptz;
begin
  for v_group in select g.id, g.name, g.paused_at from pgxjob_groups g order by g.name loop
    -- ASAP jobs: the first id of each priority level is its oldest (ids grow with insertion).
    v_oldest := null;
    v_priority := null;
    loop
      select j.priority into v_priority
      from pgxjob_asap_jobs j
      where j.group_id = v_group.id
        and j.worker_id is null
        and (v_priority is null or j.priority < v_priority)
      order by j.priority desc
      limit 1;
      exit when not found;

      select j.inserted_at into v_at
      from pgxjob_asap_jobs j
      where j.group_id = v_group.id
        and j.worker_id is null
        and j.priority = v_priority
      order by j.id
      limit 1;
      v_oldest := least(v_oldest, v_at);
    end loop;

    select min(j.next_run_at) into v_at
    from pgxjob_run_at_jobs j
    where j.group_id = v_group.id
      and j.worker_id is null
      and j.next_run_at <= v_now;

    group_name := v_group.name;
    paused_at := v_group.paused_at;
    oldest_due_at := least(v_oldest, v_at);
    select
      count(*) filter (where w.heartbeat_at + w.dead_after * 2 / 5 >= v_now),
      count(*) filter (where w.heartbeat_at + w.dead_after * 2 / 5 < v_now
                         and greatest(w.heartbeat_at, pg_postmaster_start_time()) + w.dead_after
                           >= v_now),
      count(*) filter (where greatest(w.heartbeat_at, pg_postmaster_start_time()) + w.dead_after
                         < v_now)
    into workers_alive, workers_stale, workers_dead
    from pgxjob_workers w
    where w.group_id = v_group.id;
    return next;
  end loop;
end;
$$;

-- Every registered worker: where it runs, its heartbeat and its age, its state (alive, stale or
-- dead, as in pgxjob_group_overview) and how many jobs it holds (running or prefetched).
create function pgxjob_worker_overview(p_now timestamptz default now())
returns table (
  worker_id int,
  group_name text,
  host text,
  pid int,
  inserted_at timestamptz,
  heartbeat_at timestamptz,
  heartbeat_age interval,
  dead_after interval,
  state text,
  jobs_held bigint
)
language plpgsql
stable
called on null input
as $$
#variable_conflict use_column
declare
  v_now timestamptz := coalesce(p_now, now());
begin
  return query
  select w.id, g.name, w.host, w.pid, w.inserted_at, w.heartbeat_at, v_now - w.heartbeat_at,
    w.dead_after,
    case
      when greatest(w.heartbeat_at, pg_postmaster_start_time()) + w.dead_after < v_now
        then 'dead'
      when w.heartbeat_at + w.dead_after * 2 / 5 < v_now then 'stale'
      else 'alive'
    end,
    (select count(*) from pgxjob_asap_jobs j where j.worker_id = w.id)
      + (select count(*) from pgxjob_run_at_jobs j where j.worker_id = w.id)
  from pgxjob_workers w
  join pgxjob_groups g on g.id = w.group_id
  order by g.name, w.id;
end;
$$;

-- What a Prometheus scrape reads, in one call: pgxjob_jobs{group,type,state} (waiting, due,
-- scheduled, running), pgxjob_oldest_waiting_job_age_seconds{group} (0 when nothing is due) and
-- pgxjob_workers{group,state} (alive, stale, dead). One row per sample.
create function pgxjob_metrics(p_now timestamptz default now())
returns table (metric text, group_name text, job_type text, state text, value double precision)
language plpgsql
stable
called on null input
as $$
#variable_conflict use_column
declare
  v_now timestamptz := coalesce(p_now, now());
begin
  return query
  select 'pgxjob_jobs', o.group_name, o.job_type, s.state, s.value::double precision
  from pgxjob_job_overview(v_now) o
  cross join lateral (
    values ('waiting', o.waiting), ('due', o.due), ('scheduled', o.scheduled),
      ('running', o.running)
  ) s(state, value);

  return query
  with groups as (select * from pgxjob_group_overview(v_now))
  select 'pgxjob_oldest_waiting_job_age_seconds', g.group_name, null::text, null::text,
    coalesce(greatest(0, extract(epoch from v_now) - extract(epoch from g.oldest_due_at)), 0)
      ::double precision
  from groups g
  union all
  select 'pgxjob_workers', g.group_name, null, s.state, s.value::double precision
  from groups g
  cross join lateral (
    values ('alive', g.workers_alive), ('stale', g.workers_stale), ('dead', g.workers_dead)
  ) s(state, value);
end;
$$;

-- Runs per group, type and time bucket since `since`, by outcome: the overview's last hour and
-- its sparklines. Reads the run log through its BRIN index on finished_at, so its cost is that
-- of the runs since `since`. A bucket without runs has no row.
create function pgxjob_run_history(
  since timestamptz default now() - interval '1 hour',
  bucket interval default interval '1 minute'
)
returns table (
  group_name text,
  job_type text,
  bucket_at timestamptz,
  succeeded bigint,
  failed bigint,
  retried bigint,
  cancelled bigint
)
language plpgsql
stable
called on null input
as $$
#variable_conflict use_column
begin
  if since is null or bucket is null or bucket <= interval '0' or bucket > interval '1 day'
    or extract(epoch from bucket) < 1
  then
    raise exception 'pgxjob: since must be a time and bucket between a second and a day, got % '
      'and %', since, bucket
      using errcode = 'PJ005',
            hint = 'Pass for example now() - interval ''1 hour'' and interval ''1 minute''.';
  end if;

  return query
  select g.name, t.name, date_bin(bucket, r.finished_at, since) as b,
    count(*) filter (where r.outcome = 'succeeded' or (r.outcome is null and r.error is null)),
    count(*) filter (where r.outcome = 'failed' or (r.outcome is null and r.error is not null)),
    count(*) filter (where r.outcome = 'retried'),
    count(*) filter (where r.outcome = 'cancelled')
  from pgxjob_job_runs r
  join pgxjob_groups g on g.id = r.group_id
  join pgxjob_job_types t on t.id = r.type_id
  where r.finished_at >= since
  group by g.name, t.name, b
  order by g.name, t.name, b;
end;
$$;

-- One page of the run log, newest first (finished_at, job_id, run_number, all descending),
-- filtered by group, type, outcome and a finish-time range [since, until). The next page starts
-- after the last row of this one: pass its finished_at, job_id and run_number as the `after_*`
-- arguments (keyset paging: no OFFSET, so page 1000 costs what page 1 does). The run log's only
-- time index is BRIN on finished_at, which cannot return rows in order, so the search reads
-- growing windows before the cursor (a minute, ten, an hour, six, a day, a week, a month, a
-- year, then everything) and stops at the first that holds a full page: its cost is that of the
-- runs in that window.
create function pgxjob_job_runs_page(
  max_rows int default 50,
  in_group text default null,
  of_type text default null,
  with_outcome text default null,
  since timestamptz default null,
  until timestamptz default null,
  after_finished_at timestamptz default null,
  after_job_id bigint default null,
  after_run_number int default null
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
  v_top timestamptz;
  v_cursor_job bigint := coalesce(after_job_id, 9223372036854775807);
  v_cursor_run int := coalesce(after_run_number, 2147483647);
  v_window interval;
  v_low timestamptz;
  v_found int;
begin
  if max_rows is null or max_rows < 1 or max_rows > 10000 then
    raise exception 'pgxjob: max_rows must be between 1 and 10000, got %', max_rows
      using errcode = 'PJ005',
            hint = 'Pass how many runs a page holds, for example 50.';
  end if;
  if with_outcome is not null
    and with_outcome not in ('succeeded', 'failed', 'retried', 'cancelled', 'stale')
  then
    raise exception 'pgxjob: unknown outcome "%"', with_outcome
      using errcode = 'PJ005',
            hint = 'Pass succeeded, failed, retried, cancelled, stale or null for every outcome.';
  end if;
  if (after_finished_at is null) <> (after_job_id is null)
    or (after_job_id is null) <> (after_run_number is null)
  then
    raise exception 'pgxjob: after_finished_at, after_job_id and after_run_number go together'
      using errcode = 'PJ005',
            hint = 'Pass all three from the last row of the previous page, or none.';
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
    v_group_id := pgxjob_group_id(in_group);
  end if;

  -- The upper end of the search: the cursor, else `until`, else nothing (a run may finish on a
  -- worker's clock ahead of the database's).
  v_top := case
    when after_finished_at is not null and until is not null then least(after_finished_at, until)
    else coalesce(after_finished_at, until)
  end;
  if until is not null and (after_finished_at is null or until <= after_finished_at) then
    -- `until` is exclusive: no row at exactly until passes the cursor test below.
    v_cursor_job := -9223372036854775807 - 1;
  end if;

  foreach v_window in array array[
    interval '1 minute', interval '10 minutes', interval '1 hour', interval '6 hours',
    interval '1 day', interval '7 days', interval '30 days', interval '365 days', null
  ] loop
    v_low := coalesce(v_top, now()) - v_window;
    if v_window is not null and since is not null and v_low <= since then
      -- The window reaches past `since`: this is the last one to read.
      v_low := since;
      v_window := null;
    elsif v_window is null then
      v_low := since;
    end if;

    if v_window is not null then
      select count(*) into v_found
      from (
        select 1
        from pgxjob_job_runs r
        where r.finished_at >= v_low
          and (v_top is null
               or (r.finished_at, r.job_id, r.run_number) < (v_top, v_cursor_job, v_cursor_run))
          and (v_type_id is null or r.type_id = v_type_id)
          and (v_group_id is null or r.group_id = v_group_id)
          and (with_outcome is null or r.outcome = with_outcome)
        limit max_rows
      ) enough;
      continue when v_found < max_rows;
    end if;

    return query
    select r.job_id, r.run_number, g.name, t.name, r.inserted_at, r.run_at, r.started_at,
      r.finished_at, r.params, r.error, r.outcome, r.output
    from pgxjob_job_runs r
    join pgxjob_groups g on g.id = r.group_id
    left join pgxjob_job_types t on t.id = r.type_id
    where (v_low is null or r.finished_at >= v_low)
      and (v_top is null
           or (r.finished_at, r.job_id, r.run_number) < (v_top, v_cursor_job, v_cursor_run))
      and (v_type_id is null or r.type_id = v_type_id)
      and (v_group_id is null or r.group_id = v_group_id)
      and (with_outcome is null or r.outcome = with_outcome)
    order by r.finished_at desc, r.job_id desc, r.run_number desc
    limit max_rows;
    return;
  end loop;
end;
$$;

-- One job as a JSON document: {"job": ..., "runs": [...]}. "job" is the waiting or running job
-- (null once it has finished): its state (waiting, due, scheduled, retrying or running), group,
-- type, params, times, attempts, last error, priority, unique key, cancel request and owner
-- with its host and pid. "runs" is every logged run, oldest first, read through the run log's
-- primary key. Returns null when there is neither.
create function pgxjob_job_detail(job_id bigint, p_now timestamptz default now())
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
    'worker_pid', w.pid
  )
  into v_job
  from (
    select a.id, true as asap, a.group_id, a.type_id, a.params, a.inserted_at,
      a.inserted_at as run_at, a.inserted_at as next_run_at, 0 as error_count,
      null::text as last_error, a.priority, a.unique_key, a.cancel_requested, a.worker_id
    from pgxjob_asap_jobs a
    where a.id = job_id
    union all
    select r.id, false, r.group_id, r.type_id, r.params, r.inserted_at, r.run_at, r.next_run_at,
      r.error_count, r.last_error, r.priority, r.unique_key, r.cancel_requested, r.worker_id
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
    'output', r.output
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

-- Schedules a new ASAP job from a failed run: the run's type, group and params, priority 0, no
-- unique key. run_number null means the job's last run. Returns the new job's id. Raises PJ005
-- when the run does not exist or did not fail for good (a retried run's job retries on its own).
create function pgxjob_retry_job_run(job_id bigint, run_number int default null)
returns bigint
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_variable
declare
  v_run record;
begin
  select r.type_id, r.group_id, g.name as group_name, r.params, r.outcome, r.run_number
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
                           0, null);
end;
$$;

-- Makes a job scheduled for later due now: a timed job (or one waiting to retry) that no worker
-- holds gets next_run_at = p_now and its group's workers are woken. Returns 'due', or
-- 'already_due' for a job that is due already (an ASAP job, say), 'running' for a job a worker
-- holds (nothing changes), 'not_found' for a job that does not exist (unknown or finished).
create function pgxjob_run_job_now(job_id bigint, p_now timestamptz default now())
returns text
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_variable
declare
  v_now timestamptz := coalesce(p_now, now());
  v_row record;
begin
  -- Lock order: the ASAP row, then the timed row (a job is in one of them).
  select j.worker_id into v_row
  from pgxjob_asap_jobs j
  where j.id = job_id
  for update;
  if found then
    return case when v_row.worker_id is null then 'already_due' else 'running' end;
  end if;

  select j.worker_id, j.next_run_at, g.name as group_name into v_row
  from pgxjob_run_at_jobs j
  join pgxjob_groups g on g.id = j.group_id
  where j.id = job_id
  for update of j;
  if not found then
    return 'not_found';
  elsif v_row.worker_id is not null then
    return 'running';
  elsif v_row.next_run_at <= v_now then
    return 'already_due';
  end if;

  update pgxjob_run_at_jobs j set next_run_at = v_now where j.id = job_id;
  perform pg_notify('pgxjob_job_available', v_row.group_name);
  return 'due';
end;
$$;

-- Workers describe themselves and can use every read function; the actions join cancel and
-- prune, which workers (and the command line, which runs as a worker role) already have.
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
      'pgxjob_schedule_periodic', 'pgxjob_unschedule_periodic', 'pgxjob_periodic_job_status',
      'pgxjob_register_worker', 'pgxjob_describe_worker', 'pgxjob_worker_heartbeat',
      'pgxjob_reap_dead_workers', 'pgxjob_unregister_worker', 'pgxjob_fetch_jobs',
      'pgxjob_next_run_in', 'pgxjob_release_unknown_jobs',
      'pgxjob_record_job_results', 'pgxjob_linear_backoff', 'pgxjob_prune_job_runs',
      'pgxjob_job_counts', 'pgxjob_worker_status', 'pgxjob_recent_job_runs',
      'pgxjob_job_run_stats', 'pgxjob_status',
      'pgxjob_pause_group', 'pgxjob_resume_group', 'pgxjob_job_overview',
      'pgxjob_group_overview', 'pgxjob_worker_overview', 'pgxjob_metrics', 'pgxjob_run_history',
      'pgxjob_job_runs_page', 'pgxjob_job_detail', 'pgxjob_retry_job_run', 'pgxjob_run_job_now'
    ],
    array['pgxjob_schema_migrations']
  )
$$;

-- Into the private schema, with wrappers for the public ones; worker roles get the new functions.
do $$
declare
  v_api name := current_schema();
  v_role record;
begin
  execute format('select %I.pgxjob_publish_functions($1, $2, $3, $4)', 'pgxjob_' || v_api)
  using v_api, 'pgxjob_' || v_api,
    array['pgxjob_group_id', 'pgxjob_sample_percent'],
    array['pgxjob_grant_worker'];

  for v_role in
    select distinct pg_get_userbyid(a.grantee) as role_name
    from pg_proc p
    cross join lateral aclexplode(p.proacl) a
    where p.pronamespace = (select n.oid from pg_namespace n where n.nspname = v_api)
      and p.proname = 'pgxjob_fetch_jobs'
      and a.privilege_type = 'EXECUTE' and a.grantee <> 0
  loop
    execute format('select count(*) from %I.pgxjob_grant_worker(%L)', v_api, v_role.role_name);
  end loop;
end;
$$;
