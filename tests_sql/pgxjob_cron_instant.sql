-- pgxjob_cron_instant(wall, time_zone): the instant a wall-clock time fires at.
begin;
select plan(6);

select is(pgxjob_cron_instant('2024-06-01 12:00', 'Europe/Berlin'),
  '2024-06-01 10:00+00'::timestamptz, 'an ordinary time');
select is(pgxjob_cron_instant('2024-03-31 02:30', 'Europe/Berlin'),
  '2024-03-31 01:00+00'::timestamptz, 'a skipped time fires when the clocks go forward');
select is(pgxjob_cron_instant('2024-03-31 01:59:59', 'Europe/Berlin'),
  '2024-03-31 00:59:59+00'::timestamptz, 'the last second before the gap');
select is(pgxjob_cron_instant('2024-10-27 02:30', 'Europe/Berlin'),
  '2024-10-27 00:30+00'::timestamptz, 'a repeated time fires at its first occurrence');
select is(pgxjob_cron_instant('2024-10-27 03:00', 'Europe/Berlin'),
  '2024-10-27 02:00+00'::timestamptz, 'the end of the repeated hour');
select is(pgxjob_cron_instant('2011-12-30 12:00', 'Pacific/Apia'),
  '2011-12-30 10:00+00'::timestamptz, 'a skipped day (Samoa, 2011) fires when the day resumes');

select * from finish();
rollback;
