-- pgxjob_cron_field(cron, field, value, min, max, names): the sorted values one cron field allows.
begin;
select plan(7);

select is(pgxjob_cron_field('x', 'minute', '*', 0, 59), array(select generate_series(0, 59)),
  '* is every value');
select is(pgxjob_cron_field('x', 'minute', '*/20,5,5,1-3', 0, 59), '{0,1,2,3,5,20,40}'::int[],
  'a list is sorted and without duplicates');
select is(pgxjob_cron_field('x', 'hour', '20/2', 0, 23), '{20,22}'::int[], 'a/n runs to the end');
select is(pgxjob_cron_field('x', 'month', 'mar-May,oct', 1, 12,
                            array['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP',
                                  'OCT', 'NOV', 'DEC']),
  '{3,4,5,10}'::int[], 'names in any case, in ranges and lists');
select is(pgxjob_cron_field('x', 'day-of-week', '07', 0, 7), '{7}'::int[],
  'leading zeros are read as numbers; 7 is left for the caller to fold');
select throws_ok($$select pgxjob_cron_field('x', 'hour', '9999', 0, 23)$$, 'PJ007',
  'pgxjob: cron expression "x": bad hour "9999": "9999" is not a number from 0 to 23',
  'a long number raises PJ007, not an overflow');
select throws_ok($$select pgxjob_cron_field('x', 'hour', '-1', 0, 23)$$, 'PJ007',
  'pgxjob: cron expression "x": bad hour "-1": "-1" is not a range from low to high',
  'a negative number is a broken range');

select * from finish();
rollback;
