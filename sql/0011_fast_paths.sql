-- Fast paths. Replaces pgxjob_schedule and pgxjob_apply_job_results with the same signatures,
-- grants and settings; no table changes, no lock beyond the brief one of each function change.
--
-- pgxjob_schedule looks its job type and group up with one plan per case (the type's default
-- group, or the group named), where one OR-ed join condition cost about 20 us of server CPU per
-- call, and writes the common job itself (as soon as possible, no unique key) instead of through
-- a second PL/pgSQL call. A job with a unique key or a future run_at still goes through
-- pgxjob_insert_job.
--
-- pgxjob_apply_job_results computed the retry time of linear backoff twice per retried result,
-- each time through pgxjob_backoff_time, a PL/pgSQL function whose exception handler opens a
-- subtransaction. It is now computed once, as plain arithmetic where no overflow is possible.
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
values (11, 'fast_paths')
on conflict (version) do nothing;

-- The enqueue function of 0009, same arguments and behaviour. Replacing its wrapper in the
-- install schema keeps the wrapper's grants; pgxjob_publish_functions (below) moves this body to
-- the private schema, in place of the implementation there, and writes the wrapper again.
create or replace function pgxjob_schedule(
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
  v_id bigint;
begin
  -- The lookup is inlined rather than a call to pgxjob_resolve_job_target: this is the hot path
  -- of every producer. The resolver runs only when the lookup finds nothing, to raise the precise
  -- error.
  if group_name is null then
    select t.id, g.id, g.name
    into v_type_id, v_group_id, v_group_name
    from pgxjob_job_types t
    join pgxjob_groups g on g.id = t.default_group_id
    where t.name = job_type;
  else
    select t.id, g.id, g.name
    into v_type_id, v_group_id, v_group_name
    from pgxjob_job_types t
    cross join pgxjob_groups g
    where t.name = job_type
      and g.name = pgxjob_schedule.group_name;
  end if;

  if v_type_id is null then
    perform pgxjob_resolve_job_target(job_type, group_name);
  end if;
  if trace_context is not null then
    perform pgxjob_check_trace_context(trace_context);
  end if;

  -- Most jobs: due now, no unique key. Written here, as pgxjob_insert_job would.
  if unique_key is null and (run_at is null or run_at <= now()) then
    insert into pgxjob_asap_jobs (group_id, type_id, params, priority, trace_context)
    values (v_group_id, v_type_id, params, coalesce(priority, 0), trace_context)
    returning id into v_id;

    perform pg_notify('pgxjob_job_available', v_group_name);
    return v_id;
  end if;

  return pgxjob_insert_job(v_type_id, v_group_id, v_group_name, params, run_at, priority,
                           unique_key, trace_context);
end;
$$;

-- The result batch of 0010, with the retry time of linear backoff computed once per result. A
-- later migration that replaces it must declare the same settings.
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
set enable_nestloop = off
set enable_seqscan = off
set jit = off
as $$
declare
  v_notified bigint;
  v_owned bigint[];
  v_cancel_requested boolean[];
  v_timed_owned bigint[];
  v_timed_cancel_requested boolean[];
begin
  -- Lock order: the rows this worker still owns, ASAP table first, each in id order. The
  -- statement below then takes no job row lock it does not already hold, and the rows locked
  -- here are the jobs it may change: nobody else can take them from this worker before commit.
  -- (is not distinct from, with p_worker_id not null, is "=" that no index answers: each row is
  -- found through the primary key, one probe per id. Through the worker_id index every claimed
  -- job would be read and tested against the whole id array, N x N comparisons per batch.)
  select coalesce(array_agg(o.id), '{}'), coalesce(array_agg(o.cancel_requested), '{}')
  into v_owned, v_cancel_requested
  from (
    select j.id, j.cancel_requested
    from pgxjob_asap_jobs j
    where j.id = any (p_job_ids)
      and j.worker_id is not distinct from p_worker_id
    order by j.id
    for update
  ) o;

  select coalesce(array_agg(o.id), '{}'), coalesce(array_agg(o.cancel_requested), '{}')
  into v_timed_owned, v_timed_cancel_requested
  from (
    select j.id, j.cancel_requested
    from pgxjob_run_at_jobs j
    where j.id = any (p_job_ids)
      and j.worker_id is not distinct from p_worker_id
    order by j.id
    for update
  ) o;


  -- Data-modifying CTEs share one snapshot, so each job is handled by exactly one branch: a job
  -- id appears once per batch (the last result wins), and the branches' conditions are disjoint.
  -- Every branch takes only jobs owned by p_worker_id (locked above): the worker id is the fencing
  -- token, and a result from a worker that was reaped (and whose job another worker may be
  -- running) changes nothing.
  with input as (
    select distinct on (r.job_id)
      r.job_id, r.error_count, r.started_at, r.finished_at, r.log, r.output,
      r.error is not null as failed, coalesce(r.cancelled, false) as cancelled,
      case
        when r.error is null then null
        when r.retry_at is not null then r.retry_at
        else r.backoff_at
      end as next_run_at,
      case
        when r.backoff_applies and r.backoff_at is null
        then r.error || format(E'\n(pgxjob: the retry time %s + (%s + 1) * %s is out of range; '
          'recorded as a final failure)', p_now, r.error_count, r.base_delay)
        else r.error
      end as error
    from (
      -- The linear backoff's retry time, computed once per result (offset 0 keeps the planner
      -- from copying the expression into each of its uses). While the shift is below about a
      -- thousand years in each field of the interval and p_now lies between the years 1000 and
      -- 290000, nothing can overflow and it is plain arithmetic; otherwise pgxjob_backoff_time
      -- decides (null when out of range), at the price of a call and a subtransaction.
      select u.*,
        case
          when u.backoff_applies is not true then null
          when abs(date_part('year', u.base_delay) * 12 + date_part('month', u.base_delay))
              * abs(u.error_count::float8 + 1) < 12000
            and abs(date_part('day', u.base_delay)) * abs(u.error_count::float8 + 1) < 365000
            and abs(date_part('hour', u.base_delay) * 3600
                    + date_part('minute', u.base_delay) * 60
                    + date_part('second', u.base_delay)) * abs(u.error_count::float8 + 1)
              < 3.2e10
            and p_now between '1000-01-01 00:00:00+00' and '290000-01-01 00:00:00+00'
          then p_now + (u.error_count::float8 + 1) * u.base_delay
          else pgxjob_backoff_time(p_now, u.error_count, u.base_delay)
        end as backoff_at
      from (
        select v.*,
          v.error is not null and v.retry_at is null and v.max_retries is not null
            and v.base_delay is not null and v.error_count < v.max_retries as backoff_applies
        from unnest(
          p_job_ids, p_error_counts, p_started_at, p_finished_at, p_errors, p_retry_at,
          p_backoff_max_retries, p_backoff_base_delays, p_log, p_outputs, p_cancelled
        ) with ordinality as v(
          job_id, error_count, started_at, finished_at, error, retry_at, max_retries,
          base_delay, log, output, cancelled, ord
        )
      ) u
      offset 0
    ) r
    order by r.job_id, r.ord desc
  ),
  -- The jobs this worker owns, and whether each has a cancel request.
  owned as (
    select o.id, o.cancel_requested
    from unnest(v_owned || v_timed_owned, v_cancel_requested || v_timed_cancel_requested)
      as o(id, cancel_requested)
  ),
  -- A cancelled job finishes whatever its handler did, and is never retried. A retry of a job
  -- that has reached the largest error_count is a final failure.
  decided as (
    select i.job_id, i.error_count, i.started_at, i.finished_at, i.log, i.output, i.failed,
      o.id is not null as owned,
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
    where j.id = any (array(
        select x.job_id from decided x where x.owned and x.next_run_at is null
      ))
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.inserted_at as run_at, j.params,
      0 as error_count, j.unique_key, j.trace_context
  ),
  done_run_at as (
    -- A final failure must also match the error_count: a result for an earlier run of the job
    -- must not end it.
    delete from pgxjob_run_at_jobs j
    using decided i
    where j.id = any (array(
        select x.job_id from decided x where x.owned and x.next_run_at is null
      ))
      and j.id = i.job_id
      and (not i.failed or i.cancelled or j.error_count = i.error_count)
    returning j.id, j.group_id, j.type_id, j.inserted_at, j.run_at, j.params, j.error_count,
      j.unique_key, j.trace_context
  ),
  moved as (
    delete from pgxjob_asap_jobs j
    using decided i
    where j.id = any (array(
        select x.job_id from decided x
        where x.owned and x.next_run_at is not null and x.error_count = 0
      ))
      and j.id = i.job_id
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
    where j.id = any (array(
        select x.job_id from decided x where x.owned and x.next_run_at is not null
      ))
      and j.id = i.job_id
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

-- Into the private schema, replacing the functions of 0009 and 0010; pgxjob_schedule gets its
-- wrapper again, with the grants both halves had.
do $$
declare
  v_api name := current_schema();
begin
  execute format('select %I.pgxjob_publish_functions($1, $2, $3, $4)', 'pgxjob_' || v_api)
  using v_api, 'pgxjob_' || v_api, array['pgxjob_apply_job_results'], array[]::text[];
end;
$$;
