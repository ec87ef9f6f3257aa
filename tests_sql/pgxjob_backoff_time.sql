-- pgxjob_backoff_time(p_now, error_count, base_delay): the retry time, or null when out of range.
begin;
select plan(5);

select is(pgxjob_backoff_time('2030-01-01 00:00:00+00', 0, interval '10 seconds'),
  '2030-01-01 00:00:10+00'::timestamptz, 'the first retry waits one base delay');
select is(pgxjob_backoff_time('2030-01-01 00:00:00+00', 2, interval '10 seconds'),
  '2030-01-01 00:00:30+00'::timestamptz, 'the third retry waits three');
select is(pgxjob_backoff_time('2030-01-01 00:00:00+00', 2147483646, interval '1 microsecond'),
  '2030-01-01 00:35:47.483647+00'::timestamptz, 'the largest error count does not overflow');
select is(pgxjob_backoff_time(now(), 5, interval '1000000000 days'), null,
  'a time past the end of timestamptz''s range is null, not an error');
select is(pgxjob_backoff_time(now(), 2147483646, interval '100 years'), null,
  'an interval that overflows in the multiplication is null, not an error');

select * from finish();
rollback;
