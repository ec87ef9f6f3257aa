-- pgxjob_linear_backoff(error_count, max_retries, base_delay, now): the retry time, or null when
-- retries are exhausted.
begin;
\ir helpers.psql
select plan(9);

select is(pgxjob_linear_backoff(0, 3, interval '10 seconds', '2030-01-01 00:00:00+00'),
  '2030-01-01 00:00:10+00'::timestamptz, 'error count 0: now + 1 * base_delay');
select is(pgxjob_linear_backoff(1, 3, interval '10 seconds', '2030-01-01 00:00:00+00'),
  '2030-01-01 00:00:20+00'::timestamptz, 'error count 1: now + 2 * base_delay');
select is(pgxjob_linear_backoff(2, 3, interval '10 seconds', '2030-01-01 00:00:00+00'),
  '2030-01-01 00:00:30+00'::timestamptz, 'error count max - 1: now + max * base_delay');
select is(pgxjob_linear_backoff(3, 3, interval '10 seconds', '2030-01-01 00:00:00+00'),
  null, 'error count max: retries are exhausted');
select is(pgxjob_linear_backoff(7, 3, interval '10 seconds', '2030-01-01 00:00:00+00'),
  null, 'error count beyond max: exhausted');
select is(pgxjob_linear_backoff(0, 0, interval '10 seconds', '2030-01-01 00:00:00+00'),
  null, 'max_retries 0 never retries');
select is(pgxjob_linear_backoff(0, 3, interval '10 seconds'), now() + interval '10 seconds',
  'p_now defaults to now()');
select is(pgxjob_linear_backoff(0, null, interval '10 seconds'), null,
  'a null max_retries means no backoff');
select is(
  pgxjob_linear_backoff(error_count => 1, max_retries => 5, base_delay => interval '1 minute',
                        p_now => '2030-01-01 00:00:00+00'),
  '2030-01-01 00:02:00+00'::timestamptz, 'named notation works');

select * from finish();
rollback;
