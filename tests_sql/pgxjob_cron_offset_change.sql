-- pgxjob_cron_offset_change(lo, hi, time_zone): when the zone's offset changed between lo and hi.
begin;
select plan(3);

select is(pgxjob_cron_offset_change('2024-03-30 12:00+00', '2024-03-31 12:00+00', 'Europe/Berlin'),
  '2024-03-31 01:00+00'::timestamptz, 'spring forward in Berlin');
select is(pgxjob_cron_offset_change('2024-11-03 05:59:59+00', '2024-11-03 06:00+00',
                                    'America/New_York'),
  '2024-11-03 06:00+00'::timestamptz, 'one second apart: hi');
select is(pgxjob_cron_offset_change('2024-11-01 00:00+00', '2024-11-05 00:00+00',
                                    'America/New_York'),
  '2024-11-03 06:00+00'::timestamptz, 'fall back in New York');

select * from finish();
rollback;
