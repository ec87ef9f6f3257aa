-- pgxjob_check_trace_context(trace_context): null, or a W3C traceparent of 55 characters.
begin;
select plan(14);

select lives_ok($$select pgxjob_check_trace_context(null)$$, 'null is no trace context');
select lives_ok(
  $$select pgxjob_check_trace_context('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')$$,
  'a sampled traceparent passes');
select lives_ok(
  $$select pgxjob_check_trace_context('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00')$$,
  'an unsampled one passes');
select lives_ok(
  $$select pgxjob_check_trace_context('cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09')$$,
  'a later version of the same length passes');

select throws_ok(
  $$select pgxjob_check_trace_context('00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01')$$,
  'PJ005',
  'pgxjob: trace_context ''00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01'' is not a '
    'W3C traceparent',
  'uppercase hex is refused, naming the value');
select throws_ok(
  $$select pgxjob_check_trace_context('ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')$$,
  'PJ005', null, 'version ff is refused');
select throws_ok(
  $$select pgxjob_check_trace_context('00-00000000000000000000000000000000-00f067aa0ba902b7-01')$$,
  'PJ005', null, 'an all-zero trace id is refused');
select throws_ok(
  $$select pgxjob_check_trace_context('00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01')$$,
  'PJ005', null, 'an all-zero parent id is refused');
select throws_ok(
  $$select pgxjob_check_trace_context('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x')$$,
  'PJ005', null, 'extra fields are refused');
select throws_ok(
  $$select pgxjob_check_trace_context(E'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n')$$,
  'PJ005', null, 'a trailing newline is refused');
select throws_ok(
  $$select pgxjob_check_trace_context('00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01')$$,
  'PJ005', null, 'other separators are refused');
select throws_ok(
  $$select pgxjob_check_trace_context('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é')$$,
  'PJ005', null, 'a multibyte character that keeps 55 characters is refused');
select throws_ok($$select pgxjob_check_trace_context('')$$, 'PJ005', null,
  'an empty string is refused (null means none)');
select throws_ok(
  format('select pgxjob_check_trace_context(%L)', repeat('a', 1000000)),
  'PJ005',
  format('pgxjob: trace_context %s... (1000000 bytes) is not a W3C traceparent',
         quote_literal(repeat('a', 60))),
  'a megabyte is refused quoting 60 characters of it and its size');

select * from finish();
rollback;
