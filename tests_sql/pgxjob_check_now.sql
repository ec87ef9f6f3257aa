-- pgxjob_check_now(p_now): the current time a function computes with must be finite and in range.
begin;
select plan(5);

select lives_ok($$select pgxjob_check_now(now())$$, 'now() passes');
select lives_ok($$select pgxjob_check_now('2030-01-01')$$, 'a finite time passes');
select throws_ok($$select pgxjob_check_now(null)$$, 'PJ005', null, 'null raises PJ005');
select throws_ok($$select pgxjob_check_now('infinity')$$, 'PJ005', null, 'infinity raises PJ005');
select throws_ok($$select pgxjob_check_now('200000-01-01')$$, 'PJ005',
  'pgxjob: the current time must be a finite time between the years 1 and 99999, got 200000-01-01 00:00:00+00',
  'a time near the end of timestamptz''s range raises PJ005 naming it');

select * from finish();
rollback;
