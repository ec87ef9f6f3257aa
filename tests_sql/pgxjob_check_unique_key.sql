-- pgxjob_check_unique_key(key): null or at most 1000 bytes.
begin;
select plan(3);

select lives_ok($$select pgxjob_check_unique_key(null)$$, 'null is no key');
select lives_ok(format('select pgxjob_check_unique_key(%L)', repeat('é', 500)), '1000 bytes pass');
select throws_ok(format('select pgxjob_check_unique_key(%L)', repeat('😀', 251)), 'PJ005', null,
  '1004 bytes raise PJ005');

select * from finish();
rollback;
