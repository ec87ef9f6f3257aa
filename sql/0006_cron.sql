-- Cron schedules: pgxjob_cron_next, the next fire time of a cron expression in a time zone, and
-- its internal parser. Adds functions only; takes no lock on any table.
--
-- Error codes added (see 0001 for PJ001-PJ005):
--   PJ007 invalid cron expression or time zone

-- The implementation lives in the private schema; see 0005 for why this is session-level.
select pg_catalog.set_config(
  'search_path',
  pg_catalog.format('%I, %I, pg_temp', pg_catalog.current_schema(),
                    'pgxjob_' || pg_catalog.current_schema()),
  false
);

insert into pgxjob_schema_migrations (version, name)
values (6, 'cron')
on conflict (version) do nothing;

-- The values one field of a cron expression allows, sorted and without duplicates. p_value is the
-- field's text: a comma-separated list of items, each "*", a value or a range "a-b", optionally
-- followed by a step "/n" ("a/n" means a to the field's maximum); p_names, when given, are the
-- names of p_min, p_min + 1, ... in upper case. p_cron and p_field are for the messages. Raises
-- PJ007 naming the field and the bad value.
create function pgxjob_cron_field(
  p_cron text,
  p_field text,
  p_value text,
  p_min int,
  p_max int,
  p_names text[] default null
)
returns int[]
language plpgsql
immutable
called on null input
as $$
declare
  v_hint text := format(
    'The %s field takes %s: a value, a list, a range or a step, such as %s.', p_field,
    case p_field
      when 'second' then '0-59'
      when 'minute' then '0-59'
      when 'hour' then '0-23'
      when 'day-of-month' then '1-31'
      when 'month' then '1-12 or JAN-DEC'
      else '0-7 (0 and 7 are Sunday) or SUN-SAT'
    end,
    case p_field
      when 'second' then '0, 0,30, 10-20 or */15'
      when 'minute' then '5, 0,30, 10-20 or */15'
      when 'hour' then '9, 9,17, 9-17 or */2'
      when 'day-of-month' then '1, 1,15, 1-7 or */10'
      when 'month' then '1, JAN,JUL, 3-5 or */3'
      else '1, MON-FRI, SAT,SUN or */2'
    end);
  v_values int[] := '{}';
  v_item text;
  v_base text;
  v_step int;
  v_bound text;
  v_bounds int[];
  v_pos int;
begin
  foreach v_item in array string_to_array(p_value, ',') loop
    if v_item !~ '^[^/]+(/[^/]*)?$' then
      raise exception 'pgxjob: cron expression "%": bad % "%": "%" is not a value, a range or a '
        'step', p_cron, p_field, p_value, v_item
        using errcode = 'PJ007', hint = v_hint;
    end if;
    v_base := split_part(v_item, '/', 1);
    v_step := 1;
    if position('/' in v_item) > 0 then
      if split_part(v_item, '/', 2) !~ '^[0-9]{1,3}$'
        or split_part(v_item, '/', 2)::int not between 1 and p_max - p_min + 1
      then
        raise exception 'pgxjob: cron expression "%": bad % "%": step "%" is not a number from 1 '
          'to %', p_cron, p_field, p_value, split_part(v_item, '/', 2), p_max - p_min + 1
          using errcode = 'PJ007', hint = v_hint;
      end if;
      v_step := split_part(v_item, '/', 2)::int;
    end if;

    if v_base = '*' then
      v_bounds := array[p_min, p_max];
    elsif v_base ~ '(^-|-$|--)' then
      raise exception 'pgxjob: cron expression "%": bad % "%": "%" is not a range from low to '
        'high', p_cron, p_field, p_value, v_base
        using errcode = 'PJ007', hint = v_hint;
    else
      v_bounds := '{}';
      foreach v_bound in array string_to_array(v_base, '-') loop
        v_pos := array_position(p_names, upper(v_bound));
        if v_pos is not null then
          v_bounds := v_bounds || (p_min + v_pos - 1);
        elsif v_bound ~ '^[0-9]{1,3}$' and v_bound::int between p_min and p_max then
          v_bounds := v_bounds || v_bound::int;
        else
          raise exception 'pgxjob: cron expression "%": bad % "%": "%" is not %', p_cron,
            p_field, p_value, v_bound,
            case when p_names is null then format('a number from %s to %s', p_min, p_max)
                 else format('a number from %s to %s or a name %s-%s', p_min, p_max,
                             p_names[1], p_names[cardinality(p_names)]) end
            using errcode = 'PJ007', hint = v_hint;
        end if;
      end loop;
      if cardinality(v_bounds) = 1 then
        -- "a/n" runs from a to the end of the field, as in cronie.
        v_bounds := array[v_bounds[1],
                          case when position('/' in v_item) > 0 then p_max else v_bounds[1] end];
      elsif cardinality(v_bounds) <> 2 or v_bounds[1] > v_bounds[2] then
        raise exception 'pgxjob: cron expression "%": bad % "%": "%" is not a range from low to '
          'high', p_cron, p_field, p_value, v_base
          using errcode = 'PJ007', hint = v_hint;
      end if;
    end if;

    v_values := v_values || array(select generate_series(v_bounds[1], v_bounds[2], v_step));
  end loop;

  if v_values = '{}' then
    raise exception 'pgxjob: cron expression "%": the % field is empty', p_cron, p_field
      using errcode = 'PJ007', hint = v_hint;
  end if;

  return array(select distinct v from unnest(v_values) v order by v);
end;
$$;

-- A cron expression parsed into the sorted values each field allows: seconds (0 for five
-- fields), minutes, hours, days of the month, months, and days of the week (0-6, Sunday 0, a 7
-- read as 0). either_day is true when day-of-month and day-of-week are both restricted (neither
-- field starts with "*"), and a day then matches if either does (Vixie cron); otherwise both must.
-- frequent is true when the seconds, minute or hour field starts with "*": such an expression
-- follows the clock through a repeated hour, where a fixed-time one fires once (Vixie cron).
-- Raises PJ007 for a malformed expression and for one that can never fire.
create function pgxjob_cron_parse(
  p_cron text,
  out seconds int[],
  out minutes int[],
  out hours int[],
  out days int[],
  out months int[],
  out weekdays int[],
  out either_day boolean,
  out frequent boolean
)
language plpgsql
immutable
called on null input
as $$
declare
  v_fields text[];
  v_offset int;
  v_month_days constant int[] := array[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
begin
  if p_cron is null then
    raise exception 'pgxjob: the cron expression must not be null'
      using errcode = 'PJ007',
            hint = 'Pass five fields "minute hour day-of-month month day-of-week", or a macro '
                   'such as @daily.';
  end if;

  v_fields := regexp_split_to_array(btrim(p_cron, E' \t\n\r'), E'[ \t\n\r]+');
  if cardinality(v_fields) = 1 and left(v_fields[1], 1) = '@' then
    v_fields := regexp_split_to_array(
      case lower(v_fields[1])
        when '@yearly' then '0 0 1 1 *'
        when '@annually' then '0 0 1 1 *'
        when '@monthly' then '0 0 1 * *'
        when '@weekly' then '0 0 * * 0'
        when '@daily' then '0 0 * * *'
        when '@midnight' then '0 0 * * *'
        when '@hourly' then '0 * * * *'
      end, ' ');
    if v_fields is null then
      raise exception 'pgxjob: cron expression "%": unknown macro "%"', p_cron, btrim(p_cron)
        using errcode = 'PJ007',
              hint = 'The macros are @yearly, @annually, @monthly, @weekly, @daily, @midnight '
                     'and @hourly.';
    end if;
  end if;

  if cardinality(v_fields) not in (5, 6) or v_fields[1] = '' then
    raise exception 'pgxjob: cron expression "%" has % fields, not 5 or 6', p_cron,
      case when v_fields[1] = '' then 0 else cardinality(v_fields) end
      using errcode = 'PJ007',
            hint = 'Write five fields "minute hour day-of-month month day-of-week", six with a '
                   'leading seconds field, or a macro such as @daily.';
  end if;

  v_offset := cardinality(v_fields) - 5;
  seconds := case when v_offset = 1 then pgxjob_cron_field(p_cron, 'second', v_fields[1], 0, 59)
                  else array[0] end;
  minutes := pgxjob_cron_field(p_cron, 'minute', v_fields[v_offset + 1], 0, 59);
  hours := pgxjob_cron_field(p_cron, 'hour', v_fields[v_offset + 2], 0, 23);
  days := pgxjob_cron_field(p_cron, 'day-of-month', v_fields[v_offset + 3], 1, 31);
  months := pgxjob_cron_field(p_cron, 'month', v_fields[v_offset + 4], 1, 12,
    array['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC']);
  weekdays := pgxjob_cron_field(p_cron, 'day-of-week', v_fields[v_offset + 5], 0, 7,
    array['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT']);
  weekdays := array(select distinct w % 7 from unnest(weekdays) w order by 1);
  either_day := left(v_fields[v_offset + 3], 1) <> '*' and left(v_fields[v_offset + 5], 1) <> '*';
  frequent := (v_offset = 1 and left(v_fields[1], 1) = '*')
    or left(v_fields[v_offset + 1], 1) = '*' or left(v_fields[v_offset + 2], 1) = '*';

  -- With day-of-week unrestricted, some allowed month must have an allowed day (February counts
  -- 29, which comes at least every 8 years); otherwise the expression never fires.
  if not either_day
    and days[1] > (select max(v_month_days[m]) from unnest(months) m)
  then
    raise exception 'pgxjob: cron expression "%" never fires: no month in its month field "%" has '
      'a day %', p_cron, v_fields[v_offset + 4], days[1]
      using errcode = 'PJ007',
            hint = 'Pick a day-of-month that the months have (February has 29 days at most), '
                   'or restrict day-of-week too, so that a day matches if either field does.';
  end if;
end;
$$;

-- The first instant in (p_lo, p_hi] whose UTC offset in p_time_zone is the one at p_hi: the
-- moment the zone's offset changed, when it changed once between them. A binary search over
-- whole seconds since the epoch (offset changes happen on whole seconds), so that it ends for
-- bounds with fractions of a second too.
create function pgxjob_cron_offset_change(p_lo timestamptz, p_hi timestamptz, p_time_zone text)
returns timestamptz
language plpgsql
stable -- the time zone database can change
strict
as $$
declare
  v_lo bigint := floor(extract(epoch from p_lo))::bigint;
  v_hi bigint := ceil(extract(epoch from p_hi))::bigint;
  v_mid bigint;
  v_offset interval := (p_hi at time zone p_time_zone) - (p_hi at time zone 'UTC');
begin
  while v_hi - v_lo > 1 loop
    v_mid := (v_lo + v_hi) / 2;
    if (to_timestamp(v_mid) at time zone p_time_zone) - (to_timestamp(v_mid) at time zone 'UTC')
       = v_offset
    then
      v_hi := v_mid;
    else
      v_lo := v_mid;
    end if;
  end loop;
  return to_timestamp(v_hi);
end;
$$;

-- The instant a wall-clock time of p_time_zone fires at: the time itself when it occurs once; its
-- first occurrence when it occurs twice (the hour repeated when clocks go back); and the first
-- instant after it when it does not occur (the hour skipped when clocks go forward), which is
-- the moment of the change. Assumes at most one offset change within a day of p_wall.
create function pgxjob_cron_instant(p_wall timestamp, p_time_zone text)
returns timestamptz
language plpgsql
stable -- the time zone database can change
strict
as $$
declare
  -- PostgreSQL reads a repeated time as the later occurrence, a skipped one with the old offset.
  v_at timestamptz := p_wall at time zone p_time_zone;
  v_before interval;
  v_after interval;
  v_early timestamptz;
  v_late timestamptz;
begin
  -- Offsets a day either side (24 hours, not '1 day', which would follow the session's zone).
  v_before := ((v_at - interval '24 hours') at time zone p_time_zone)
    - ((v_at - interval '24 hours') at time zone 'UTC');
  v_after := ((v_at + interval '24 hours') at time zone p_time_zone)
    - ((v_at + interval '24 hours') at time zone 'UTC');
  if v_before = v_after then
    return v_at;
  end if;

  -- Near a change: the readings with each offset, valid when the zone agrees at that instant.
  v_early := (p_wall - v_before) at time zone 'UTC';
  v_late := (p_wall - v_after) at time zone 'UTC';
  if (v_early at time zone p_time_zone) = p_wall then
    if (v_late at time zone p_time_zone) = p_wall then
      return least(v_early, v_late);
    end if;
    return v_early;
  elsif (v_late at time zone p_time_zone) = p_wall then
    return v_late;
  end if;

  -- Skipped: the change happened between the two readings.
  return pgxjob_cron_offset_change(least(v_early, v_late), greatest(v_early, v_late),
                                   p_time_zone);
end;
$$;

-- The first fire time of the cron expression strictly after `after`, evaluated in time_zone.
--
-- cron: five fields "minute hour day-of-month month day-of-week", or six with a leading seconds
--   field. Each field is a comma-separated list of "*", values, ranges "a-b" and steps "*/n",
--   "a-b/n" or "a/n" (a to the field's end). Months may be named JAN-DEC and days of the week
--   SUN-SAT (any case); Sunday is 0 or 7. When day-of-month and day-of-week are both restricted
--   (neither starts with "*"), a day matches if either field matches, as in Vixie cron; else both
--   must. The macros @yearly (= @annually), @monthly, @weekly, @daily (= @midnight) and @hourly
--   stand for "0 0 1 1 *", "0 0 1 * *", "0 0 * * 0", "0 0 * * *" and "0 * * * *".
-- after: any finite time; a fire time equal to it is not returned.
-- time_zone: an IANA name (anything PostgreSQL's AT TIME ZONE accepts). Fields are matched
--   against the wall clock there. A wall time skipped when clocks go forward fires at the first
--   instant after it (the moment of the change; several skipped times fire there once). When
--   clocks go back, an expression at fixed times (its seconds, minute and hour fields do not
--   start with "*") fires once, at the first occurrence of a repeated time; a frequent one (any
--   of those fields starts with "*", as in "*/5 * * * *" or "0 * * * *") follows the clock
--   through both passes of the repeated hour, as Vixie cron does, instead of pausing for it.
--
-- Raises PJ007 for a null, malformed or never-firing expression (the message names the field and
-- value, the hint shows the form) and for a null or unknown time zone; PJ005 for a null or
-- infinite after. Not strict: a null argument is a caller's bug that would otherwise leave a
-- schedule with no next time, silently. Stable: the time zone database can change.
create function pgxjob_cron_next(cron text, after timestamptz, time_zone text default 'UTC')
returns timestamptz
language plpgsql
stable
called on null input
as $$
declare
  v_cron record;
  v_local timestamp;
  v_wall timestamp;
  v_date date;
  v_limit date;
  v_month int;
  v_next_month int;
  v_day_ok boolean;
  v_hour int;
  v_minute int;
  v_second int;
  v_found boolean;
  v_candidate timestamp;
  v_instant timestamptz;
  -- Frequent expressions only: the candidates are being read in the second pass of a repeated
  -- hour, as the later of their two occurrences.
  v_second_pass boolean := false;
  v_first timestamptz;
  v_horizon timestamptz;
  v_change timestamptz;
begin
  v_cron := pgxjob_cron_parse(cron);

  if after is null or not isfinite(after)
    or after < '0001-01-01 00:00:00+00' or after > '99999-12-31 00:00:00+00'
  then
    raise exception 'pgxjob: after must be a finite time between the years 1 and 99999, got %',
      coalesce(after::text, 'null')
      using errcode = 'PJ005',
            hint = 'Pass the time to start from, for example now() or the last fire time.';
  end if;

  if time_zone is null then
    raise exception 'pgxjob: the time zone must not be null'
      using errcode = 'PJ007',
            hint = 'Pass an IANA time zone name such as UTC, Europe/Berlin or America/New_York.';
  end if;
  begin
    v_local := after at time zone time_zone;
  exception
    when invalid_parameter_value then
      raise exception 'pgxjob: unknown time zone "%"', time_zone
        using errcode = 'PJ007',
              hint = 'Pass an IANA time zone name such as UTC, Europe/Berlin or '
                     'America/New_York (see pg_timezone_names).';
  end;

  -- Fire times are whole seconds: the first candidate is the next whole second of the wall clock.
  v_wall := date_trunc('second', v_local) + interval '1 second';
  -- After parsing, an expression fires at least every 8 years (February 29 across 2100).
  v_limit := (v_local + interval '9 years')::date;

  loop
    v_date := v_wall::date;
    if v_date > v_limit then
      raise exception 'pgxjob: cron expression "%" does not fire within 9 years after %', cron,
        after
        using errcode = 'PJ007',
              hint = 'Check that its day-of-month and month fields can meet.';
    end if;

    -- Month, then day, then the time of day on that day; each step jumps to the next candidate.
    v_month := extract(month from v_date);
    if not v_month = any (v_cron.months) then
      v_next_month := (select min(m) from unnest(v_cron.months) m where m > v_month);
      v_wall := case
        when v_next_month is null
          then make_date(extract(year from v_date)::int + 1, v_cron.months[1], 1)
        else make_date(extract(year from v_date)::int, v_next_month, 1)
      end;
      continue;
    end if;

    if v_cron.either_day then
      v_day_ok := extract(day from v_date)::int = any (v_cron.days)
        or extract(dow from v_date)::int = any (v_cron.weekdays);
    else
      v_day_ok := extract(day from v_date)::int = any (v_cron.days)
        and extract(dow from v_date)::int = any (v_cron.weekdays);
    end if;
    if not v_day_ok then
      v_wall := v_date + 1;
      continue;
    end if;

    -- The first (hour, minute, second) at or after v_wall's time of day.
    v_found := false;
    <<hours>>
    foreach v_hour in array v_cron.hours loop
      continue when v_hour < extract(hour from v_wall);
      foreach v_minute in array v_cron.minutes loop
        continue when v_hour = extract(hour from v_wall) and v_minute < extract(minute from v_wall);
        foreach v_second in array v_cron.seconds loop
          continue when v_hour = extract(hour from v_wall)
            and v_minute = extract(minute from v_wall)
            and v_second < extract(second from v_wall);
          v_found := true;
          exit hours;
        end loop;
      end loop;
    end loop;
    if not v_found then
      v_wall := v_date + 1;
      continue;
    end if;

    v_candidate := v_date + make_time(v_hour, v_minute, v_second);
    if time_zone = 'UTC' then
      return v_candidate at time zone 'UTC';
    end if;
    v_instant := pgxjob_cron_instant(v_candidate, time_zone);
    if v_second_pass then
      -- A time already passed once is read as its later occurrence (PostgreSQL's reading of a
      -- repeated time); none comes later than the fire time found before the second pass.
      if v_instant <= after then
        v_instant := v_candidate at time zone time_zone;
      end if;
      return least(v_instant, v_first);
    end if;
    if v_instant > after then
      if v_cron.frequent then
        -- Clocks that go back between `after` and this fire time repeat an hour whose second
        -- pass comes first: go on from the moment they go back, reading times there.
        v_horizon := least(v_instant, after + interval '25 hours');
        if (v_horizon at time zone time_zone) - (v_horizon at time zone 'UTC')
           < (after at time zone time_zone) - (after at time zone 'UTC')
        then
          v_change := pgxjob_cron_offset_change(after, v_horizon, time_zone);
          if v_change <= v_instant then
            v_second_pass := true;
            v_first := v_instant;
            v_wall := v_change at time zone time_zone;
            continue;
          end if;
        end if;
      end if;
      return v_instant;
    end if;
    if v_cron.frequent then
      -- `after` lies in the second pass of a repeated hour: this time's next occurrence is there.
      v_second_pass := true;
      continue;
    end if;

    -- v_candidate fired already: `after` lies in the second pass of a repeated hour, and so
    -- does every wall time up to the end of that hour (they fire at their first occurrence).
    -- Go on from where the hour ends, found between the first occurrence and `after`.
    v_wall := greatest(
      v_candidate + interval '1 second',
      (pgxjob_cron_offset_change(v_instant, after, time_zone) - interval '1 second')
        at time zone time_zone + interval '1 second'
    );
  end loop;
end;
$$;

-- Into the private schema; pgxjob_cron_next gets a wrapper. They read no table, so the owner's
-- rights (the default of pgxjob_publish_functions) give them nothing a caller lacks.
do $$
declare
  v_api name := current_schema();
begin
  execute format('select %I.pgxjob_publish_functions($1, $2, $3, $4)', 'pgxjob_' || v_api)
  using v_api, 'pgxjob_' || v_api,
    array['pgxjob_cron_field', 'pgxjob_cron_parse', 'pgxjob_cron_offset_change',
          'pgxjob_cron_instant'],
    array[]::text[];
end;
$$;
