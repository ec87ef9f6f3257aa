-- pgxjob_cron_next(cron, after, time_zone): the first fire time strictly after `after`, on the
-- wall clock of time_zone. Every expected time below was worked out by hand (calendar and tz
-- rules); instants are written in UTC.
begin;
\ir helpers.psql
select plan(113);
-- A search that does not end fails the file instead of hanging the suite.
set local statement_timeout = '20s';

create temp table t_cases (cron text, after timestamptz, zone text, expected timestamptz,
                           description text);
insert into t_cases values
  -- Steps, ranges, lists, strictly after.
  ('*/15 * * * *', '2024-01-01 00:07+00', 'UTC', '2024-01-01 00:15+00', 'a step of the minutes'),
  ('*/15 * * * *', '2024-01-01 00:15+00', 'UTC', '2024-01-01 00:30+00',
   'an after exactly on a fire time gives the next one'),
  ('0 * * * *', '2024-01-01 00:59:59.999+00', 'UTC', '2024-01-01 01:00+00',
   'a fraction of a second before a fire time gives that fire time'),
  ('1-30/5 * * * *', '2024-01-01 00:27+00', 'UTC', '2024-01-01 01:01+00',
   'a stepped range: 1,6,...,26, then the next hour'),
  ('10/20 * * * *', '2024-01-01 00:31+00', 'UTC', '2024-01-01 00:50+00',
   'a/n steps from a to the end of the field'),
  ('0 9,17 * * *', '2024-01-01 09:00+00', 'UTC', '2024-01-01 17:00+00', 'a list of hours'),
  ('5,1-3 */6 * * *', '2024-01-01 06:03+00', 'UTC', '2024-01-01 06:05+00',
   'a list mixing a range and a value'),
  ('59 23 31 12 *', '2024-12-31 23:59+00', 'UTC', '2025-12-31 23:59+00',
   'once a year, across the year end'),
  (E'  0\t0 * * *  ', '2024-01-01 12:00+00', 'UTC', '2024-01-02 00:00+00',
   'spaces and tabs around and between fields'),
  -- Leap years and short months.
  ('0 0 29 2 *', '2024-03-01 00:00+00', 'UTC', '2028-02-29 00:00+00',
   'February 29 waits for the next leap year'),
  ('0 0 29 2 *', '2097-01-01 00:00+00', 'UTC', '2104-02-29 00:00+00',
   'February 29 skips 2100, which is not a leap year'),
  ('0 0 29 2 *', '2000-01-01 00:00+00', 'UTC', '2000-02-29 00:00+00', '2000 is a leap year'),
  ('0 0 31 * *', '2024-04-01 00:00+00', 'UTC', '2024-05-31 00:00+00',
   'the 31st skips months without one'),
  ('0 0 30 * *', '2024-01-31 00:00+00', 'UTC', '2024-03-30 00:00+00',
   'the 30th skips February'),
  -- Days of the week.
  ('0 0 * * 0', '2024-01-01 00:00+00', 'UTC', '2024-01-07 00:00+00', 'Sunday as 0'),
  ('0 0 * * 7', '2024-01-01 00:00+00', 'UTC', '2024-01-07 00:00+00', 'Sunday as 7'),
  ('0 0 * * sun', '2024-01-01 00:00+00', 'UTC', '2024-01-07 00:00+00', 'Sunday by name, any case'),
  ('0 0 * * 6-7', '2024-01-01 00:00+00', 'UTC', '2024-01-06 00:00+00', 'a range ending in 7'),
  ('0 0 * * 5-7', '2024-01-06 12:00+00', 'UTC', '2024-01-07 00:00+00', '5-7 includes Sunday'),
  ('0 9 * * MON-FRI', '2024-01-05 09:00+00', 'UTC', '2024-01-08 09:00+00',
   'weekdays by name skip the weekend'),
  ('0 0 * * */2', '2024-01-02 00:00+00', 'UTC', '2024-01-04 00:00+00',
   'a step of days of the week: Sun, Tue, Thu, Sat'),
  -- Day-of-month and day-of-week.
  ('0 0 13 * FRI', '2024-01-01 00:00+00', 'UTC', '2024-01-05 00:00+00',
   'both restricted: either matches (Friday the 5th)'),
  ('0 0 13 * FRI', '2024-01-12 00:00+00', 'UTC', '2024-01-13 00:00+00',
   'both restricted: either matches (Saturday the 13th)'),
  ('0 0 13 * *', '2024-01-01 00:00+00', 'UTC', '2024-01-13 00:00+00',
   'day-of-week * : day-of-month alone'),
  ('0 0 * * FRI', '2024-01-06 00:00+00', 'UTC', '2024-01-12 00:00+00',
   'day-of-month * : day-of-week alone'),
  ('0 0 */2 * MON', '2024-01-01 00:00+00', 'UTC', '2024-01-15 00:00+00',
   'a field starting with * counts as unrestricted: odd days that are Mondays (Vixie)'),
  ('0 0 30 2 MON', '2024-01-01 00:00+00', 'UTC', '2024-02-05 00:00+00',
   'the 30th of February or a Monday in February: the Mondays'),
  -- Names.
  ('0 0 1 JAN,jul *', '2024-02-01 00:00+00', 'UTC', '2024-07-01 00:00+00', 'month names'),
  ('0 0 1 */3 *', '2024-02-01 00:00+00', 'UTC', '2024-04-01 00:00+00',
   'a step of months: 1, 4, 7, 10'),
  ('0 0 1 FEB-APR/2 *', '2024-02-01 00:00+00', 'UTC', '2024-04-01 00:00+00',
   'a stepped range of month names'),
  -- Macros.
  ('@yearly', '2024-06-01 00:00+00', 'UTC', '2025-01-01 00:00+00', '@yearly'),
  ('@annually', '2024-01-01 00:00+00', 'UTC', '2025-01-01 00:00+00', '@annually, strictly after'),
  ('@monthly', '2024-01-31 00:00+00', 'UTC', '2024-02-01 00:00+00', '@monthly'),
  ('@weekly', '2024-01-01 00:00+00', 'UTC', '2024-01-07 00:00+00', '@weekly: Sundays'),
  ('@daily', '2024-01-01 12:00+00', 'UTC', '2024-01-02 00:00+00', '@daily'),
  ('@MIDNIGHT', '2024-01-01 12:00+00', 'UTC', '2024-01-02 00:00+00', '@midnight, any case'),
  ('@hourly', '2024-01-01 12:30+00', 'UTC', '2024-01-01 13:00+00', '@hourly'),
  ('@daily', '2024-01-01 12:00+00', 'Europe/Berlin', '2024-01-01 23:00+00',
   'a macro in a time zone: Berlin midnight'),
  -- Seconds.
  ('*/10 * * * * *', '2024-01-01 00:00:05+00', 'UTC', '2024-01-01 00:00:10+00',
   'six fields: seconds first'),
  ('30 0 12 * * *', '2024-01-01 00:00+00', 'UTC', '2024-01-01 12:00:30+00',
   'six fields: second 30 of minute 0 of hour 12'),
  ('* * * * * *', '2024-01-01 00:00:00.5+00', 'UTC', '2024-01-01 00:00:01+00', 'every second'),
  ('59 59 23 31 12 *', '2024-12-31 23:59:59+00', 'UTC', '2025-12-31 23:59:59+00',
   'the last second of the year, strictly after'),
  -- Europe/Berlin: clocks go forward 2024-03-31 02:00 -> 03:00 (01:00 UTC), back 2024-10-27
  -- 03:00 -> 02:00 (01:00 UTC).
  ('30 2 * * *', '2024-03-30 12:00+00', 'Europe/Berlin', '2024-03-31 01:00+00',
   'Berlin spring forward: the skipped 02:30 fires at 03:00'),
  ('30 2 * * *', '2024-03-31 01:00+00', 'Europe/Berlin', '2024-04-01 00:30+00',
   'Berlin spring forward: it fires once, then 02:30 the next day'),
  ('*/15 * * * *', '2024-03-31 00:50+00', 'Europe/Berlin', '2024-03-31 01:00+00',
   'Berlin spring forward: 02:00-02:45 and 03:00 fire together at 03:00'),
  ('*/15 * * * *', '2024-03-31 01:00+00', 'Europe/Berlin', '2024-03-31 01:15+00',
   'Berlin spring forward: once, then 03:15'),
  ('0 30 2 * * *', '2024-03-30 12:00+00', 'Europe/Berlin', '2024-03-31 01:00+00',
   'Berlin spring forward: six fields too'),
  ('0 3 * * *', '2024-03-30 12:00+00', 'Europe/Berlin', '2024-03-31 01:00+00',
   'Berlin spring forward: 03:00 exists'),
  ('30 2 * * *', '2024-10-26 12:00+00', 'Europe/Berlin', '2024-10-27 00:30+00',
   'Berlin fall back: the repeated 02:30 fires at its first occurrence'),
  ('30 2 * * *', '2024-10-27 00:30+00', 'Europe/Berlin', '2024-10-28 01:30+00',
   'Berlin fall back: and not at its second'),
  ('30 2 * * *', '2024-10-27 01:20+00', 'Europe/Berlin', '2024-10-28 01:30+00',
   'Berlin fall back: from inside the repeated hour, the next day'),
  ('*/30 * * * *', '2024-10-27 00:40+00', 'Europe/Berlin', '2024-10-27 01:00+00',
   'Berlin fall back: a frequent schedule goes on into the second pass, at 02:00 CET'),
  ('*/30 * * * *', '2024-10-27 01:00+00', 'Europe/Berlin', '2024-10-27 01:30+00',
   'Berlin fall back: and through it, at 02:30 CET'),
  ('* * * * * *', '2024-10-27 01:20+00', 'Europe/Berlin', '2024-10-27 01:20:01+00',
   'Berlin fall back: every second, from the second pass, the next second'),
  ('* * * * * *', '2024-10-27 00:59:59+00', 'Europe/Berlin', '2024-10-27 01:00:00+00',
   'Berlin fall back: every second, from the last second of the first pass, the first of the second'),
  ('0 30 2 * * *', '2024-10-27 00:30+00', 'Europe/Berlin', '2024-10-28 01:30+00',
   'Berlin fall back: six fields at a fixed time fire once too'),
  ('10 3 * * *', '2024-10-27 01:20+00', 'Europe/Berlin', '2024-10-27 02:10+00',
   'Berlin fall back: a time after the repeated hour on the same day'),
  ('0 0 * * *', '2024-10-26 12:00+00', 'Europe/Berlin', '2024-10-26 22:00+00',
   'Berlin: midnight before the change is CEST'),
  ('0 0 * * *', '2024-10-26 22:00+00', 'Europe/Berlin', '2024-10-27 23:00+00',
   'Berlin: midnight after the change is CET'),
  -- America/New_York: forward 2024-03-10 02:00 -> 03:00 (07:00 UTC), back 2024-11-03 02:00 ->
  -- 01:00 (06:00 UTC).
  ('30 2 * * *', '2024-03-09 12:00+00', 'America/New_York', '2024-03-10 07:00+00',
   'New York spring forward: the 02:30 job fires at 03:00 that day'),
  ('30 2 * * *', '2024-03-10 07:00+00', 'America/New_York', '2024-03-11 06:30+00',
   'New York spring forward: once'),
  ('30 1 * * *', '2024-11-02 12:00+00', 'America/New_York', '2024-11-03 05:30+00',
   'New York fall back: the 01:30 job fires at the first 01:30 (EDT)'),
  ('30 1 * * *', '2024-11-03 05:30+00', 'America/New_York', '2024-11-04 06:30+00',
   'New York fall back: once, not again at 01:30 EST'),
  ('0 * * * *', '2024-11-03 05:30+00', 'America/New_York', '2024-11-03 06:00+00',
   'New York fall back: hourly fires at 01:00 EST too, as Vixie cron does'),
  ('0 * * * *', '2024-11-03 06:00+00', 'America/New_York', '2024-11-03 07:00+00',
   'New York fall back: hourly, then 02:00 EST'),
  ('*/20 1 * * *', '2024-11-03 05:50+00', 'America/New_York', '2024-11-03 06:00+00',
   'New York fall back: every 20 minutes in hour 1 fires in both passes'),
  ('0,30 * * * * *', '2024-10-27 00:59:58.5+00', 'Europe/Berlin', '2024-10-27 01:00:00+00',
   'Berlin fall back: from a fraction of a second before the change, into the second pass'),
  ('30 2 * * *', '2024-10-27 01:20:00.25+00', 'Europe/Berlin', '2024-10-28 01:30+00',
   'Berlin fall back: from a fraction of a second in the second pass, a fixed time waits a day'),
  -- Australia/Lord_Howe goes back half an hour on 2025-04-06, 02:00 +11 -> 01:30 +10:30 (15:00 UTC).
  ('* */2 * * *', '2025-04-05 13:59+00', 'Australia/Lord_Howe', '2025-04-05 15:30+00',
   'Lord Howe fall back: 02:00 +10:30 follows 00:59 +11'),
  ('*/10 1 * * *', '2025-04-05 14:50+00', 'Australia/Lord_Howe', '2025-04-05 15:00+00',
   'Lord Howe fall back: the repeated 01:30 follows 01:50 +11'),
  ('@daily', '2024-03-09 12:00+00', 'America/New_York', '2024-03-10 05:00+00',
   'New York: midnight before the change is EST'),
  -- Time zones without daylight saving, and half-hour offsets.
  ('0 9 * * *', '2024-06-01 00:00+00', 'Asia/Kolkata', '2024-06-01 03:30+00',
   'Kolkata 09:00 is 03:30 UTC'),
  ('0 0 1 1 *', '2024-06-01 00:00+00', 'Etc/UTC', '2025-01-01 00:00+00', 'Etc/UTC');

select is(pgxjob_cron_next(cron, after, zone), expected, description)
from t_cases
order by description;

select is(pgxjob_cron_next('0 0 * * *', '2024-01-01 12:00+00'), '2024-01-02 00:00+00'::timestamptz,
  'the time zone defaults to UTC');
select is(
  pgxjob_cron_next(cron => '0 0 * * *', after => '2024-01-01 12:00+00',
                   time_zone => 'Europe/Berlin'),
  '2024-01-01 23:00+00'::timestamptz, 'named notation works');
set local timezone = 'Pacific/Auckland';
select is(pgxjob_cron_next('30 2 * * *', '2024-03-30 12:00+00', 'Europe/Berlin'),
  '2024-03-31 01:00+00'::timestamptz, 'the session''s TimeZone does not matter');
reset timezone;

-- Errors: PJ007 with a message naming the field and the value.
select throws_ok($$select pgxjob_cron_next('* * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "* * * *" has 4 fields, not 5 or 6', 'four fields');
select throws_ok($$select pgxjob_cron_next('0 * * * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 * * * * * *" has 7 fields, not 5 or 6', 'seven fields');
select throws_ok($$select pgxjob_cron_next('  ', now())$$, 'PJ007',
  'pgxjob: cron expression "  " has 0 fields, not 5 or 6', 'an empty expression');
select throws_ok($$select pgxjob_cron_next(null, now())$$, 'PJ007',
  'pgxjob: the cron expression must not be null', 'a null expression');
select throws_ok($$select pgxjob_cron_next('60 * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "60 * * * *": bad minute "60": "60" is not a number from 0 to 59',
  'minute 60');
select throws_ok($$select pgxjob_cron_next('0 24 * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 24 * * *": bad hour "24": "24" is not a number from 0 to 23',
  'hour 24');
select throws_ok($$select pgxjob_cron_next('0 0 0 * *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 0 * *": bad day-of-month "0": "0" is not a number from 1 to 31',
  'day-of-month 0');
select throws_ok($$select pgxjob_cron_next('0 0 1-32 * *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 1-32 * *": bad day-of-month "1-32": "32" is not a number from 1 '
  'to 31', 'day-of-month 32 in a range');
select throws_ok($$select pgxjob_cron_next('0 0 1 13 *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 1 13 *": bad month "13": "13" is not a number from 1 to 12 or a '
  'name JAN-DEC', 'month 13');
select throws_ok($$select pgxjob_cron_next('0 0 1 JAN,FOO *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 1 JAN,FOO *": bad month "JAN,FOO": "FOO" is not a number from 1 '
  'to 12 or a name JAN-DEC', 'an unknown month name');
select throws_ok($$select pgxjob_cron_next('0 0 1 MON *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 1 MON *": bad month "MON": "MON" is not a number from 1 to 12 '
  'or a name JAN-DEC', 'a weekday name in the month field');
select throws_ok($$select pgxjob_cron_next('0 0 * * 8', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 * * 8": bad day-of-week "8": "8" is not a number from 0 to 7 or '
  'a name SUN-SAT', 'day-of-week 8');
select throws_ok($$select pgxjob_cron_next('0 0 * * MONDAY', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 * * MONDAY": bad day-of-week "MONDAY": "MONDAY" is not a number '
  'from 0 to 7 or a name SUN-SAT', 'a long weekday name');
select throws_ok($$select pgxjob_cron_next('JAN * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "JAN * * * *": bad minute "JAN": "JAN" is not a number from 0 to 59',
  'names only where the field has them');
select throws_ok($$select pgxjob_cron_next('60 * * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "60 * * * * *": bad second "60": "60" is not a number from 0 to 59',
  'second 60');
select throws_ok($$select pgxjob_cron_next('*/0 * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "*/0 * * * *": bad minute "*/0": step "0" is not a number from 1 to 60',
  'a step of 0');
select throws_ok($$select pgxjob_cron_next('0 */25 * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 */25 * * *": bad hour "*/25": step "25" is not a number from 1 to 24',
  'a step larger than the field');
select throws_ok($$select pgxjob_cron_next('*/x * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "*/x * * * *": bad minute "*/x": step "x" is not a number from 1 to 60',
  'a step that is not a number');
select throws_ok($$select pgxjob_cron_next('*/2/3 * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "*/2/3 * * * *": bad minute "*/2/3": "*/2/3" is not a value, a range '
  'or a step', 'two steps');
select throws_ok($$select pgxjob_cron_next('30-10 * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "30-10 * * * *": bad minute "30-10": "30-10" is not a range from low '
  'to high', 'a reversed range');
select throws_ok($$select pgxjob_cron_next('0 0 * * SAT-SUN', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 * * SAT-SUN": bad day-of-week "SAT-SUN": "SAT-SUN" is not a '
  'range from low to high', 'SAT-SUN is reversed (write 6-7)');
select throws_ok($$select pgxjob_cron_next('1-2-3 * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "1-2-3 * * * *": bad minute "1-2-3": "1-2-3" is not a range from low '
  'to high', 'a range of three');
select throws_ok($$select pgxjob_cron_next('1,,2 * * * *', now())$$, 'PJ007',
  'pgxjob: cron expression "1,,2 * * * *": bad minute "1,,2": "" is not a value, a range or a '
  'step', 'an empty list item');
select throws_ok($$select pgxjob_cron_next('0 0 L * *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 L * *": bad day-of-month "L": "L" is not a number from 1 to 31',
  'L is not supported');
select throws_ok($$select pgxjob_cron_next('0 0 * * 1#2', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 * * 1#2": bad day-of-week "1#2": "1#2" is not a number from 0 to '
  '7 or a name SUN-SAT', '# is not supported');
select throws_ok($$select pgxjob_cron_next('0 0 ? * *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 ? * *": bad day-of-month "?": "?" is not a number from 1 to 31',
  '? is not supported');
select throws_ok($$select pgxjob_cron_next('0 0 1 nov-Feb/1 *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 1 nov-Feb/1 *": bad month "nov-Feb/1": "nov-Feb" is not a range '
  'from low to high', 'a month range across the year end');
select throws_ok($$select pgxjob_cron_next('@reboot', now())$$, 'PJ007',
  'pgxjob: cron expression "@reboot": unknown macro "@reboot"', 'an unknown macro');
select throws_ok($$select pgxjob_cron_next('@daily 0', now())$$, 'PJ007',
  'pgxjob: cron expression "@daily 0" has 2 fields, not 5 or 6', 'a macro takes no fields');
select throws_ok($$select pgxjob_cron_next('0 0 30 2 *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 30 2 *" never fires: no month in its month field "2" has a day 30',
  'February 30 never fires');
select throws_ok($$select pgxjob_cron_next('0 0 31 4,6,9,11 *', now())$$, 'PJ007',
  'pgxjob: cron expression "0 0 31 4,6,9,11 *" never fires: no month in its month field '
  '"4,6,9,11" has a day 31', 'the 31st of 30-day months never fires');
select throws_ok($$select pgxjob_cron_next('0 0 * * *', now(), 'Mars/Olympus_Mons')$$, 'PJ007',
  'pgxjob: unknown time zone "Mars/Olympus_Mons"', 'an unknown time zone');
select throws_ok($$select pgxjob_cron_next('0 0 * * *', now(), null)$$, 'PJ007',
  'pgxjob: the time zone must not be null', 'a null time zone');
select throws_ok($$select pgxjob_cron_next('0 0 * * *', null)$$, 'PJ005',
  'pgxjob: after must be a finite time between the years 1 and 99999, got null', 'a null after');
select throws_ok($$select pgxjob_cron_next('0 0 * * *', 'infinity')$$, 'PJ005',
  'pgxjob: after must be a finite time between the years 1 and 99999, got infinity',
  'an infinite after');

-- The hint shows the expected form.
create function t_hint(p_sql text)
returns text
language plpgsql
as $$
declare
  v_hint text;
begin
  execute p_sql;
  return null;
exception
  when sqlstate 'PJ007' then
    get stacked diagnostics v_hint = pg_exception_hint;
    return v_hint;
end;
$$;
select is(t_hint($$select pgxjob_cron_next('0 0 * * 9', now())$$),
  'The day-of-week field takes 0-7 (0 and 7 are Sunday) or SUN-SAT: a value, a list, a range or '
  'a step, such as 1, MON-FRI, SAT,SUN or */2.', 'a field''s hint shows its form');
select is(t_hint($$select pgxjob_cron_next('* * *', now())$$),
  'Write five fields "minute hour day-of-month month day-of-week", six with a leading seconds '
  'field, or a macro such as @daily.', 'the field-count hint shows the form');

select * from finish();
rollback;
