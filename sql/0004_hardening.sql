-- Hardening: pgxjob's tables and privileged code move to a private schema that only the owner can
-- write to, and the install schema keeps thin wrappers with the same names and signatures. Results
-- are fenced by the reporting worker's ownership, a bad result no longer fails its batch, locks are
-- taken in one global order, and the migration records itself so plain psql installs match the
-- Python migrator. Locks: ACCESS EXCLUSIVE on pgxjob's own tables (ALTER TABLE ... SET SCHEMA,
-- dropping the worker_id foreign keys), so workers wait for the few milliseconds this takes.
--
-- Global lock order, kept by every function that takes more than one row lock:
--   1. pgxjob_workers rows, in id order (the reaper skips rows it cannot lock at once);
--   2. pgxjob_asap_jobs rows, in id order;
--   3. pgxjob_run_at_jobs rows, in id order;
--   4. run-log rows (inserts only).
-- Fetch takes KEY SHARE on its worker's row and claims jobs with SKIP LOCKED, so it never waits on
-- a job row.

-- The version table: created here too, so that `psql -f` of the migrations in order gives the same
-- schema as the Python migrator (which creates it before the first migration). Same definition.
create table if not exists pgxjob_schema_migrations (
  version int primary key,
  name text not null,
  applied_at timestamptz not null default now()
);

insert into pgxjob_schema_migrations (version, name)
values (1, 'initial'), (2, 'cli_functions'), (3, 'security'), (4, 'hardening')
on conflict (version) do nothing;

-- Jobs no longer reference the workers table. Releasing a dead worker's jobs is done explicitly by
-- the reaper and by unregistering, in the lock order above; the foreign key released them in
-- physical order (a deadlock with result recording) and cost a KEY SHARE lock on the worker row
-- per claimed job.
alter table pgxjob_asap_jobs drop constraint if exists pgxjob_asap_jobs_worker_id_fkey;
alter table pgxjob_run_at_jobs drop constraint if exists pgxjob_run_at_jobs_worker_id_fkey;

-- The reaper counts a worker dead only if it was already dead when the reaper itself last reached
-- the database: after an outage every worker is silent, and none of them was dead.
alter table pgxjob_workers add column previous_heartbeat_at timestamptz;
update pgxjob_workers set previous_heartbeat_at = heartbeat_at;
alter table pgxjob_workers alter column previous_heartbeat_at set not null;

-- Job types and groups that jobs still use cannot be deleted: the jobs would never run (no
-- handler can be found for a type id that is gone), and a timed one would look due for ever. The
-- error is the one a foreign key with ON DELETE RESTRICT raises (23503), which the hot tables do
-- not have because its check would lock the type and group rows on every insert.
create function pgxjob_refuse_delete_in_use()
returns trigger
language plpgsql
volatile
as $$
declare
  v_jobs boolean;
begin
  if tg_table_name = 'pgxjob_job_types' then
    v_jobs := exists (select 1 from pgxjob_asap_jobs j where j.type_id = old.id)
      or exists (select 1 from pgxjob_run_at_jobs j where j.type_id = old.id);
  else
    v_jobs := exists (select 1 from pgxjob_asap_jobs j where j.group_id = old.id)
      or exists (select 1 from pgxjob_run_at_jobs j where j.group_id = old.id);
  end if;

  if v_jobs then
    raise exception 'pgxjob: % "%" still has jobs and cannot be deleted',
      case tg_table_name when 'pgxjob_job_types' then 'job type' else 'group' end, old.name
      using errcode = 'foreign_key_violation',
            hint = 'Let its jobs finish (or delete them) first.';
  end if;

  return old;
end;
$$;

create trigger pgxjob_job_types_refuse_delete_in_use
before delete on pgxjob_job_types
for each row execute function pgxjob_refuse_delete_in_use();

create trigger pgxjob_groups_refuse_delete_in_use
before delete on pgxjob_groups
for each row execute function pgxjob_refuse_delete_in_use();

-- Raises PJ003 unless p_name is a usable name: not null, not empty, at most 1000 bytes in UTF-8
-- (the unique index on names holds at most about 2700 bytes, and 1000 characters of four bytes
-- each would not fit). p_kind says what the name is, for the message.
create or replace function pgxjob_check_name(p_kind text, p_name text)
returns void
language plpgsql
immutable
called on null input
as $$
begin
  if coalesce(p_name, '') = '' then
    raise exception 'pgxjob: % must not be null or empty', p_kind
      using errcode = 'PJ003',
            hint = format('Pass a non-empty %s.', p_kind);
  end if;

  if octet_length(p_name) > 1000 then
    raise exception 'pgxjob: % is % bytes long in UTF-8, more than 1000', p_kind,
      octet_length(p_name)
      using errcode = 'PJ003',
            hint = 'Use a shorter name; names are identifiers, not data.';
  end if;
end;
$$;

-- Resolves a job type and an optional group name to ids and the group's name. Shared by
-- pgxjob_schedule and pgxjob_schedule_many so both raise the same errors. Both names are checked,
-- so a name too long to exist raises PJ003 rather than "unknown".
create or replace function pgxjob_resolve_job_target(
  job_type text,
  group_name text,
  out type_id int,
  out group_id int,
  out resolved_group_name text
)
language plpgsql
stable
called on null input
as $$
begin
  perform pgxjob_check_name('job type', job_type);
  if group_name is not null then
    perform pgxjob_check_name('group name', group_name);
  end if;

  select t.id, g.id, g.name
  into type_id, group_id, resolved_group_name
  from pgxjob_job_types t
  left join pgxjob_groups g
    on g.id = t.default_group_id and group_name is null
    or g.name = group_name
  where t.name = job_type;

  if type_id is null then
    raise exception 'pgxjob: unknown job type "%"', job_type
      using errcode = 'PJ001',
            hint = format('Register it with select pgxjob_register_job_type(%L, ''default''); '
                          'or declare it in the Python Scheduler''s job_types.', job_type);
  end if;

  if group_id is null then
    raise exception 'pgxjob: unknown group "%"', group_name
      using errcode = 'PJ002',
            hint = format('Register it with select pgxjob_register_group(%L); '
                          'or declare it in the Python Scheduler''s job_groups.', group_name);
  end if;
end;
$$;

-- Raises PJ005 unless p_now is a time the functions can compute with: finite, and far enough from
-- the ends of timestamptz's range that adding a dead_after or subtracting a heartbeat stays in it.
create function pgxjob_check_now(p_now timestamptz)
returns void
language plpgsql
immutable
called on null input
as $$
begin
  if p_now is null or not isfinite(p_now)
    or p_now < '0001-01-01 00:00:00+00' or p_now > '99999-12-31 00:00:00+00'
  then
    raise exception 'pgxjob: the current time must be a finite time between the years 1 and '
      '99999, got %', p_now
      using errcode = 'PJ005',
            hint = 'Leave p_now out to use now(); tests may pass another finite time.';
  end if;
end;
$$;

-- The retry time of linear backoff, p_now + (error_count + 1) * base_delay, or null when it is out
-- of timestamptz's range (or the multiplication overflows): the caller then records a final
-- failure instead of failing the whole batch.
create function pgxjob_backoff_time(p_now timestamptz, p_error_count int, p_base_delay interval)
returns timestamptz
language plpgsql
stable -- timestamptz + interval depends on the TimeZone setting
strict
as $$
begin
  return p_now + (p_error_count::bigint + 1) * p_base_delay;
exception
  when datetime_field_overflow or interval_field_overflow or numeric_value_out_of_range then
    return null;
end;
$$;

-- Linear backoff: the next attempt of a job that has failed error_count times runs at
-- p_now + (error_count + 1) * base_delay, while error_count < max_retries; null when retries are
-- exhausted. Raises PJ005 when that time is out of range.
create or replace function pgxjob_linear_backoff(
  error_count int,
  max_retries int,
  base_delay interval,
  p_now timestamptz default now()
)
returns timestamptz
language plpgsql
stable
strict
as $$
declare
  v_at timestamptz;
begin
  if error_count >= max_retries then
    return null;
  end if;

  v_at := pgxjob_backoff_time(p_now, error_count, base_delay);
  if v_at is null then
    raise exception 'pgxjob: retry time % + (% + 1) * % is out of range', p_now, error_count,
      base_delay
      using errcode = 'PJ005',
            hint = 'Use a base delay of at most a few years.';
  end if;

  return v_at;
end;
$$;

-- Deletes the worker rows of dead workers and releases their jobs. A worker is dead when it has
-- been silent for longer than its dead_after, counting silence only from the later of its last
-- heartbeat and the server's start (a restart silences everyone). With p_reaper_id, the reaper
-- counts only up to its own previous heartbeat: a worker that went silent while the reaper
-- could not reach the database either (an outage) is not taken for dead. Workers whose row is
-- locked (heartbeating, fetching, or being reaped by another session) are skipped: they are alive
-- or taken care of. Returns how many workers were reaped.
create function pgxjob_reap_dead_workers(
  p_now timestamptz default now(),
  p_reaper_id int default null
)
returns int
language plpgsql
volatile
called on null input
as $$
declare
  v_cutoff timestamptz := coalesce(p_now, now());
  v_ids int[];
  v_group_ids int[];
begin
  if p_reaper_id is not null then
    select least(v_cutoff, w.previous_heartbeat_at) into v_cutoff
    from pgxjob_workers w
    where w.id = p_reaper_id;

    if not found then
      -- The reaper was itself reaped: it knows nothing about who is alive.
      return 0;
    end if;
  end if;

  with dead as (
    select w.id
    from pgxjob_workers w
    where greatest(w.heartbeat_at, pg_postmaster_start_time()) + w.dead_after < v_cutoff
    order by w.id
    for update skip locked
  ),
  deleted as (
    delete from pgxjob_workers w
    using dead d
    where w.id = d.id
    returning w.id, w.group_id
  )
  select array_agg(d.id order by d.id), array_agg(distinct d.group_id)
  into v_ids, v_group_ids
  from deleted d;

  if v_ids is null then
    return 0;
  end if;

  -- Live workers of those groups pick the released jobs up at once.
  if pgxjob_release_jobs_of(v_ids, null) > 0 then
    perform pg_notify('pgxjob_job_available', g.name)
    from pgxjob_groups g
    where g.id = any (v_group_ids);
  end if;

  return cardinality(v_ids);
end;
$$;

-- Releases the jobs owned by the given workers, except those in p_keep, locking them in the global
-- order (ASAP jobs, then timed jobs, each in id order). The caller holds or has deleted the worker
-- rows. Returns how many jobs were released.
create function pgxjob_release_jobs_of(p_worker_ids int[], p_keep bigint[])
returns int
language plpgsql
volatile
called on null input
as $$
declare
  v_asap int;
  v_timed int;
begin
  update pgxjob_asap_jobs j
  set worker_id = null
  where j.id in (
    select a.id
    from pgxjob_asap_jobs a
    where a.worker_id = any (p_worker_ids)
      and not (a.id = any (coalesce(p_keep, '{}')))
    order by a.id
    for update
  );
  get diagnostics v_asap = row_count;

  update pgxjob_run_at_jobs j
  set worker_id = null
  where j.id in (
    select a.id
    from pgxjob_run_at_jobs a
    where a.worker_id = any (p_worker_ids)
      and not (a.id = any (coalesce(p_keep, '{}')))
    order by a.id
    for update
  );
  get diagnostics v_timed = row_count;

  return v_asap + v_timed;
end;
$$;

create or replace function pgxjob_register_worker(
  p_group_name text,
  p_dead_after interval,
  p_now timestamptz default now()
)
returns int
language plpgsql
volatile
called on null input
as $$
declare
  v_group_id int;
  v_id int;
begin
  if p_dead_after is null or p_dead_after <= interval '0' or p_dead_after > interval '1 year' then
    raise exception 'pgxjob: dead_after must be a positive interval of at most a year, got %',
      p_dead_after
      using errcode = 'PJ005',
            hint = 'Pass how long a worker may go without a heartbeat, for example interval ''5 minutes''.';
  end if;

  perform pgxjob_check_now(p_now);
  perform pgxjob_check_name('a worker''s group name', p_group_name);

  select g.id into v_group_id from pgxjob_groups g where g.name = p_group_name;
  if v_group_id is null then
    raise exception 'pgxjob: unknown group "%"', p_group_name
      using errcode = 'PJ002',
            hint = format('Register it with select pgxjob_register_group(%L);', p_group_name);
  end if;

  -- No reaping here: a worker that starts just after an outage would take every other worker,
  -- silent through the same outage, for dead. Live workers reap on their heartbeats.
  insert into pgxjob_workers (group_id, inserted_at, heartbeat_at, previous_heartbeat_at, dead_after)
  values (v_group_id, p_now, p_now, p_now, p_dead_after)
  returning id into v_id;

  return v_id;
end;
$$;

-- Records that the worker is alive. Returns false when its row is gone (it was reaped while alive):
-- the caller must stop claiming and register again. Reaping is a call of its own, in its own
-- transaction, so that a heartbeat never waits on another worker's row.
create or replace function pgxjob_worker_heartbeat(p_worker_id int, p_now timestamptz default now())
returns boolean
language plpgsql
volatile
called on null input
as $$
begin
  perform pgxjob_check_now(p_now);

  update pgxjob_workers w
  set previous_heartbeat_at = w.heartbeat_at,
      heartbeat_at = greatest(w.heartbeat_at, p_now)
  where w.id = p_worker_id;

  return found;
end;
$$;

-- Deletes the worker row and releases every job it still owned (prefetched jobs that never
-- started); the group is notified so that other workers take them.
create or replace function pgxjob_unregister_worker(p_worker_id int)
returns boolean
language plpgsql
volatile
called on null input
as $$
declare
  v_group_id int;
begin
  delete from pgxjob_workers w where w.id = p_worker_id returning w.group_id into v_group_id;
  if not found then
    return false;
  end if;

  if pgxjob_release_jobs_of(array[p_worker_id], null) > 0 then
    perform pg_notify('pgxjob_job_available', g.name)
    from pgxjob_groups g
    where g.id = v_group_id;
  end if;

  return true;
end;
$$;

-- Claims up to p_limit jobs of the worker's group for the worker, in due-time order across both
-- tables (an ASAP job is due from its insertion, a timed job from next_run_at), so a stream of due
-- retries cannot starve ASAP jobs, nor the reverse. Returns zero rows when idle. Raises PJ004 when
-- the worker row is gone, so a reaped worker notices instead of claiming. A job whose type row is
-- gone comes back with a null type_name; the worker fails it with an error naming the type id.
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
  asap boolean
)
language plpgsql
volatile
called on null input
as $$
#variable_conflict use_column
declare
  v_group_id int;
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

  -- skip locked: concurrent fetchers take disjoint rows instead of queueing behind each other.
  -- Each kind is read through its partial fetch index (unowned jobs of the group, in due order)
  -- and the two are merged by due time.
  with timed as (
    select d.id, d.next_run_at as due_at, false as is_asap
    from pgxjob_run_at_jobs d
    where d.group_id = v_group_id
      and d.worker_id is null
      and d.next_run_at <= coalesce(p_now, now())
    order by d.next_run_at
    limit p_limit
    for update skip locked
  ),
  asap as (
    select d.id, d.inserted_at as due_at, true as is_asap
    from pgxjob_asap_jobs d
    where d.group_id = v_group_id
      and d.worker_id is null
    order by d.id
    limit p_limit
    for update skip locked
  ),
  chosen as (
    select c.id, c.is_asap
    from (select * from timed union all select * from asap) c
    order by c.due_at, c.id
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
      j.last_error, false as is_asap, j.next_run_at as due_at
  ),
  claimed_asap as (
    update pgxjob_asap_jobs j
    set worker_id = p_worker_id
    where j.id = any (v_asap)
    returning j.id, j.group_id, j.type_id, j.params, j.inserted_at, j.inserted_at as run_at,
      0 as error_count, null::text as last_error, true as is_asap, j.inserted_at as due_at
  ),
  claimed as (
    select * from claimed_timed
    union all
    select * from claimed_asap
  )
  select c.id, c.group_id, c.type_id, t.name, c.params, c.inserted_at, c.run_at, c.error_count,
    c.last_error, c.is_asap
  from claimed c
  left join pgxjob_job_types t on t.id = c.type_id
  order by c.due_at, c.id;
end;
$$;

-- Releases the jobs a worker owns but does not know of (p_known: every job id the worker still has
-- queued, running or awaiting its recorded result). Used after a fetch whose reply was lost, and
-- at shutdown to hand back prefetched jobs that never started. Returns how many jobs were
-- released; the group is notified when there were any.
create or replace function pgxjob_release_unknown_jobs(p_worker_id int, p_known bigint[])
returns int
language plpgsql
volatile
called on null input
as $$
declare
  v_group_id int;
  v_released int;
begin
  select w.group_id into v_group_id
  from pgxjob_workers w
  where w.id = p_worker_id
  for key share;

  if v_group_id is null then
    -- A worker that is gone owns nothing: unregistering or reaping released its jobs.
    return 0;
  end if;

  v_released := pgxjob_release_jobs_of(array[p_worker_id], p_known);

  if v_released > 0 then
    perform pg_notify('pgxjob_job_available', g.name)
    from pgxjob_groups g
    where g.id = v_group_id;
  end if;

  return v_released;
end;
$$;

-- How long until the worker's group next has an unowned timed job due, on this database's clock
-- (zero or negative when one is due now); null when there is none. Workers sleep that long instead
-- of polling, and application hosts with skewed clocks still wake on time. One index probe: the
-- minimum next_run_at of the group's fetch index. Clamped to a hundred years either way, so that
-- no time at the ends of timestamptz's range makes the subtraction overflow.
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
  select w.group_id into v_group_id from pgxjob_workers w where w.id = p_worker_id;
  if v_group_id is null then
    return null;
  end if;

  -- A job at 'infinity' never falls due.
  select min(j.next_run_at) into v_next
  from pgxjob_run_at_jobs j
  where j.group_id = v_group_id
    and j.worker_id is null
    and j.next_run_at < 'infinity';

  if v_next is null then
    return null;
  elsif v_next = '-infinity' then
    return interval '0';
  end if;

  return make_interval(secs => greatest(-3.15e9, least(3.15e9,
    (extract(epoch from v_next) - extract(epoch from p_now))::double precision)));
end;
$$;

-- Applies a batch of results of one worker in one statement; see pgxjob_record_job_results.
-- Returns how many jobs changed and the ids of the stale results. Raises if any row cannot be
-- applied; the caller then goes row by row.
create function pgxjob_apply_job_results(
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
  -- statement below then takes no row lock it does not already hold.
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
      r.job_id, r.error_count, r.started_at, r.finished_at, r.log,
      r.error is not null as failed,
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
      p_backoff_max_retries, p_backoff_base_delays, p_log
    ) with ordinality as r(
      job_id, error_count, started_at, finished_at, error, retry_at, max_retries, base_delay,
      log, ord
    )
    order by r.job_id, r.ord desc
  ),
  -- A retry of a job that has reached the largest error_count is a final failure.
  decided as (
    select i.job_id, i.error_count, i.started_at, i.finished_at, i.log, i.failed,
      case when i.error_count < 2147483647 then i.next_run_at end as next_run_at,
      case
        when i.next_run_at is not null and i.error_count >= 2147483647
        then i.error || E'\n(pgxjob: error_count cannot grow past 2147483647; recorded as a '
          'final failure)'
        else i.error
      end as error
    from input i
  ),
  -- Every branch restricts its table by an array of ids, so rows are found through the primary
  -- key; a plain join to the input would let the planner hash the whole table per batch.
  done_asap as (
    delete from pgxjob_asap_jobs j
    where j.id = any (array(select x.job_id from decided x where x.next_run_at is null))
      and j.worker_id = p_worker_id
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.inserted_at as run_at, j.params,
      0 as error_count
  ),
  done_run_at as (
    -- A final failure must also match the error_count: a result for an earlier run of the job
    -- must not end it.
    delete from pgxjob_run_at_jobs j
    using decided i
    where j.id = any (array(select x.job_id from decided x where x.next_run_at is null))
      and j.id = i.job_id
      and j.worker_id = p_worker_id
      and (not i.failed or j.error_count = i.error_count)
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.run_at, j.params, j.error_count
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
      0 as error_count, i.next_run_at, i.error
  ),
  moved_in as (
    insert into pgxjob_run_at_jobs (
      id, inserted_at, run_at, next_run_at, group_id, type_id, error_count, last_error, params
    )
    select m.id, m.inserted_at, m.run_at, m.next_run_at, m.group_id, m.type_id, 1, m.error,
      m.params
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
    -- on conflict: a run recorded twice keeps its first row.
    insert into pgxjob_job_runs (
      job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at,
      params, error
    )
    select t.id, least(t.error_count, 2147483646) + 1, t.group_id, t.type_id, t.inserted_at,
      t.run_at, i.started_at, i.finished_at, t.params, i.error
    from touched t
    join decided i on i.job_id = t.id
    where i.log
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
    array(
      select d.job_id from decided d
      where d.job_id not in (select t.id from touched t)
      order by d.job_id
    ),
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
--   p_log                       whether to write a run-log row.
-- A success or a failure without a retry time deletes the job. A retry keeps the job's id: an ASAP
-- job moves to the timed table, a timed job is updated; either way it is released. A result counts
-- only while the job is owned by p_worker_id; the others are stale, change nothing, and their ids
-- are returned. A row that cannot be applied as asked (a retry time out of range, an error_count
-- at its largest value) is recorded as a final failure whose error says why; the rest of the batch
-- is recorded all the same.
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
      p_backoff_max_retries, p_backoff_base_delays, p_log, v_now
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
        array[p_backoff_max_retries[i]], array[p_backoff_base_delays[i]], array[p_log[i]], v_now
      );
    exception
      when data_exception or integrity_constraint_violation or program_limit_exceeded then
        get stacked diagnostics v_reason = message_text;
        -- Recorded as a final failure that says why. If even that fails, the error propagates
        -- and the caller sets this row aside.
        select * into v_row
        from pgxjob_apply_job_results(
          p_worker_id, array[p_job_ids[i]], array[p_error_counts[i]], array[p_started_at[i]],
          array[p_finished_at[i]],
          array[coalesce(p_errors[i] || E'\n', '') || format(
            '(pgxjob: this result could not be recorded as asked (%s); recorded as a final '
            'failure)', v_reason)],
          array[null::timestamptz], array[null::int], array[null::interval], array[p_log[i]],
          v_now
        );
    end;
    v_changed := v_changed + v_row.changed;
    v_stale := v_stale || v_row.stale_job_ids;
  end loop;

  return query select v_changed, v_stale;
end;
$$;

drop function pgxjob_record_job_results(
  bigint[], int[], timestamptz[], timestamptz[], text[], timestamptz[], int[], interval[],
  boolean[], timestamptz
);
drop function pgxjob_reap_dead_workers(timestamptz);

-- Deletes run-log rows that finished more than older_than ago. Returns how many were deleted.
create or replace function pgxjob_prune_job_runs(older_than interval)
returns bigint
language plpgsql
volatile
called on null input
as $$
declare
  v_cutoff timestamptz;
  v_deleted bigint;
begin
  if older_than is null or older_than < interval '0' then
    raise exception 'pgxjob: older_than must be a non-negative interval, got %', older_than
      using errcode = 'PJ005',
            hint = 'Pass how old a run must be to be deleted, for example interval ''30 days''.';
  end if;

  begin
    v_cutoff := now() - older_than;
  exception
    when datetime_field_overflow then
      -- Older than the start of time: nothing is that old.
      return 0;
  end;

  delete from pgxjob_job_runs r
  where r.finished_at < v_cutoff;
  get diagnostics v_deleted = row_count;

  return v_deleted;
end;
$$;

-- The monitoring functions check p_now, since they subtract it from stored times.
create or replace function pgxjob_worker_status(p_now timestamptz default now())
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
as $$
begin
  perform pgxjob_check_now(p_now);

  return query
  select w.id, g.name, w.inserted_at, w.heartbeat_at, p_now - w.heartbeat_at, w.dead_after,
    greatest(w.heartbeat_at, pg_postmaster_start_time()) + w.dead_after >= p_now,
    (select count(*) from pgxjob_asap_jobs j where j.worker_id = w.id)
      + (select count(*) from pgxjob_run_at_jobs j where j.worker_id = w.id)
  from pgxjob_workers w
  join pgxjob_groups g on g.id = w.group_id
  order by g.name, w.id;
end;
$$;

create or replace function pgxjob_status(recent_failures int default 5, p_now timestamptz default now())
returns json
language plpgsql
stable
strict
as $$
begin
  perform pgxjob_check_now(p_now);

  return json_build_object(
    'schema_version', pgxjob_schema_version(),
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
        'lag_seconds', case when isfinite(c.oldest_due_at)
          then extract(epoch from p_now) - extract(epoch from c.oldest_due_at) end
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

-- Grants to callers by role name. Identifiers are quoted with format('%I'), never concatenated,
-- and the role must exist: an unknown name, or "public" (which GRANT reads as every role), is
-- refused. A caller reaches a function through its wrapper in the install schema, which calls the
-- implementation in the private schema as the caller: so both schemas' USAGE, and EXECUTE on both
-- the wrapper and the implementation. Only pgxjob_* functions of these two schemas are granted.
-- Security invoker: it grants with the rights of whoever calls it, normally the owner.
create or replace function pgxjob_grant_privileges(
  role_name name,
  function_names text[],
  table_names text[]
)
returns setof text
language plpgsql
volatile
called on null input
as $$
declare
  v_api name := pgxjob_api_schema();
  v_private name := current_schema();
  v_object record;
begin
  if role_name is null or not exists (select 1 from pg_roles r where r.rolname = role_name) then
    raise exception 'pgxjob: role "%" does not exist', role_name
      using errcode = 'PJ005',
            hint = 'Create the role first (create role ... nologin, or login with a password), '
                   'then grant it pgxjob''s privileges.';
  end if;

  execute format('grant usage on schema %I to %I', v_api, role_name);
  return next format('usage on schema %I', v_api);
  execute format('grant usage on schema %I to %I', v_private, role_name);
  return next format('usage on schema %I', v_private);

  for v_object in
    select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid) as args
    from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace
    where n.nspname in (v_api, v_private)
      and p.proname like 'pgxjob\_%'
      and p.proname = any (function_names)
    order by p.proname, n.nspname = v_private
  loop
    execute format('grant execute on function %I.%I(%s) to %I',
                   v_object.nspname, v_object.proname, v_object.args, role_name);
    if v_object.nspname = v_api then
      return next format('execute on function %I(%s)', v_object.proname, v_object.args);
    end if;
  end loop;

  for v_object in
    select c.relname
    from pg_class c
    where c.relnamespace = (select n.oid from pg_namespace n where n.nspname = v_api)
      and c.relname like 'pgxjob\_%'
      and c.relname = any (table_names)
      and c.relkind = 'r'
    order by c.relname
  loop
    execute format('grant select on table %I.%I to %I', v_api, v_object.relname, role_name);
    return next format('select on table %I', v_object.relname);
  end loop;
end;
$$;

-- Moves every pgxjob function of the install schema that is not a wrapper into the private schema
-- (replacing the one there with the same signature), pins its search_path to the private schema
-- then pg_temp, makes it security definer unless it is in p_invoker, and gives the public ones a
-- wrapper in the install schema with the same name, signature and grants. A later migration
-- creates or replaces functions in the install schema as usual, then calls this. Run by the owner.
create or replace function pgxjob_publish_functions(
  p_api name,
  p_private name,
  p_internal text[],
  p_invoker text[]
)
returns void
language plpgsql
volatile
called on null input
as $$
declare
  v_fn record;
  v_acl aclitem[];
  v_grantee record;
  v_old oid;
  v_call text;
begin
  for v_fn in
    select p.oid, p.proname, pg_get_function_identity_arguments(p.oid) as args,
      pg_get_function_arguments(p.oid) as arg_defs, pg_get_function_result(p.oid) as result,
      p.proretset, p.pronargs, p.provolatile, p.proisstrict, p.proacl
    from pg_proc p
    where p.pronamespace = (select n.oid from pg_namespace n where n.nspname = p_api)
      and p.proname like 'pgxjob\_%'
      and p.proname <> 'pgxjob_publish_functions'
      and p.prosrc not like '%-- pgxjob wrapper%'
    order by p.proname
  loop
    v_acl := v_fn.proacl;
    select p.oid into v_old
    from pg_proc p
    where p.pronamespace = (select n.oid from pg_namespace n where n.nspname = p_private)
      and p.proname = v_fn.proname
      and pg_get_function_identity_arguments(p.oid) = v_fn.args;
    if v_old is not null then
      v_acl := coalesce(v_acl, '{}')
        || coalesce((select p.proacl from pg_proc p where p.oid = v_old), '{}');
      execute format('drop function %I.%I(%s)', p_private, v_fn.proname, v_fn.args);
    end if;

    execute format('alter function %I.%I(%s) set schema %I',
                   p_api, v_fn.proname, v_fn.args, p_private);
    execute format('alter function %I.%I(%s) set search_path = %I, pg_temp',
                   p_private, v_fn.proname, v_fn.args, p_private);
    execute format('alter function %I.%I(%s) %s',
                   p_private, v_fn.proname, v_fn.args,
                   case when v_fn.proname = any (p_invoker) then 'security invoker'
                        else 'security definer' end);
    execute format('revoke all on function %I.%I(%s) from public',
                   p_private, v_fn.proname, v_fn.args);

    if v_fn.proname = any (p_internal) then
      continue;
    end if;

    -- The wrapper: security invoker, plain SQL with no SET clause so the planner can inline it,
    -- and nothing in its body resolved through a search_path (the callee is schema-qualified and
    -- its arguments are the wrapper's own parameters).
    v_call := format('%I.%I(%s)', p_private, v_fn.proname,
      (select string_agg('$' || n, ', ') from generate_series(1, v_fn.pronargs) n));
    execute format(
      'create function %I.%I(%s) returns %s language sql %s %s security invoker as %L',
      p_api, v_fn.proname, v_fn.arg_defs, v_fn.result,
      case v_fn.provolatile when 'i' then 'immutable' when 's' then 'stable' else 'volatile' end,
      case when v_fn.proisstrict then 'strict' else 'called on null input' end,
      E'-- pgxjob wrapper\n' || case when v_fn.proretset then 'select * from ' else 'select ' end
        || v_call);
    execute format('revoke all on function %I.%I(%s) from public',
                   p_api, v_fn.proname, v_fn.args);

    -- Whoever could execute the function before may execute both halves now.
    for v_grantee in
      select distinct a.grantee
      from unnest(coalesce(v_acl, '{}')) x
      cross join lateral aclexplode(array[x]) a
      where a.privilege_type = 'EXECUTE' and a.grantee <> 0
    loop
      execute format('grant execute on function %I.%I(%s) to %I', p_api, v_fn.proname,
                     v_fn.args, pg_get_userbyid(v_grantee.grantee));
      execute format('grant execute on function %I.%I(%s) to %I', p_private, v_fn.proname,
                     v_fn.args, pg_get_userbyid(v_grantee.grantee));
      execute format('grant usage on schema %I to %I', p_private, pg_get_userbyid(v_grantee.grantee));
    end loop;
  end loop;
end;
$$;

-- The private schema "pgxjob_<install schema>": owned by the role that migrates, writable by no
-- other. pgxjob's tables, sequence and implementation functions move there; every implementation
-- function pins search_path to it, then pg_temp, so no name in its body resolves through a schema
-- another role can create objects in (pg_catalog is searched first and only superusers write
-- there), and a temporary table cannot stand in for a pgxjob table.
do $$
declare
  v_api name := current_schema();
  v_private name;
  v_object record;
begin
  if octet_length(v_api) > 56 then
    raise exception 'pgxjob: the schema name "%" is too long for pgxjob''s private schema '
      '"pgxjob_%"', v_api, v_api
      using errcode = 'PJ005',
            hint = 'Install pgxjob into a schema whose name has at most 56 bytes.';
  end if;
  v_private := 'pgxjob_' || v_api;

  if exists (select 1 from pg_namespace n where n.nspname = v_private) then
    if exists (
      select 1
      from pg_namespace n
      cross join lateral aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
      where n.nspname = v_private
        and (n.nspowner <> (select r.oid from pg_roles r where r.rolname = current_user)
             or (a.privilege_type = 'CREATE' and a.grantee <> n.nspowner))
    ) then
      raise exception 'pgxjob: schema "%" exists and another role owns it or may create objects '
        'in it', v_private
        using errcode = 'PJ005',
              hint = 'pgxjob keeps its privileged code there; drop the schema, or revoke CREATE '
                     'from every other role and make the migrating role its owner.';
    end if;
    if exists (select 1 from pg_class c
               where c.relnamespace = (select n.oid from pg_namespace n where n.nspname = v_private))
    then
      raise exception 'pgxjob: schema "%" already holds tables (of an earlier pgxjob install?)',
        v_private
        using errcode = 'PJ005',
              hint = format('Drop it (drop schema %I cascade) if that install is gone, or migrate '
                            'into the schema it belongs to.', v_private);
    end if;
  else
    execute format('create schema %I', v_private);
  end if;
  execute format('revoke all on schema %I from public', v_private);

  for v_object in
    select c.relname, c.relkind
    from pg_class c
    where c.relnamespace = (select n.oid from pg_namespace n where n.nspname = v_api)
      and c.relname like 'pgxjob\_%'
      and c.relname <> 'pgxjob_schema_migrations'
      and c.relkind in ('r', 'p')
  loop
    -- Indexes, constraints, triggers and the sequences owned by columns move with each table.
    execute format('alter table %I.%I set schema %I', v_api, v_object.relname, v_private);
  end loop;

  -- The one function whose body names the install schema: it is built here, with the name quoted
  -- as an identifier.
  execute format(
    'create function %I.pgxjob_api_schema() returns name language sql immutable as %L',
    v_api, format('select %L::name', v_api));
  execute format(
    'create function %I.pgxjob_schema_version() returns int language sql stable as %L',
    v_api, format('select max(m.version) from %I.pgxjob_schema_migrations m', v_api));

  perform pgxjob_publish_functions(
    v_api, v_private,
    array['pgxjob_check_name', 'pgxjob_check_now', 'pgxjob_backoff_time',
          'pgxjob_resolve_job_target', 'pgxjob_release_jobs_of', 'pgxjob_apply_job_results',
          'pgxjob_refuse_delete_in_use', 'pgxjob_api_schema', 'pgxjob_schema_version'],
    array['pgxjob_grant_privileges', 'pgxjob_grant_application', 'pgxjob_grant_worker',
          'pgxjob_check_name', 'pgxjob_check_now',
          'pgxjob_backoff_time', 'pgxjob_api_schema', 'pgxjob_refuse_delete_in_use']
  );

  -- pgxjob_publish_functions itself: into the private schema, for later migrations.
  execute format('alter function %I.pgxjob_publish_functions(name, name, text[], text[]) '
                 'set schema %I', v_api, v_private);
  execute format('alter function %I.pgxjob_publish_functions(name, name, text[], text[]) '
                 'set search_path = %I, pg_temp', v_private, v_private);
  execute format('revoke all on function %I.pgxjob_publish_functions(name, name, text[], text[]) '
                 'from public', v_private);

  -- Worker roles granted before this version may call the new record and reap functions.
  for v_object in
    select distinct pg_get_userbyid(a.grantee) as role_name
    from pg_proc p
    cross join lateral aclexplode(p.proacl) a
    where p.pronamespace = (select n.oid from pg_namespace n where n.nspname = v_api)
      and p.proname = 'pgxjob_fetch_jobs'
      and a.privilege_type = 'EXECUTE' and a.grantee <> 0
  loop
    execute format('select count(*) from %I.pgxjob_grant_worker(%L)', v_api, v_object.role_name);
  end loop;
end;
$$;
