-- pgxjob_cron_parse(cron): a cron expression as the sorted values of each field.
begin;
select plan(8);

select is((select row(p.*)::text from pgxjob_cron_parse('*/20 9-17 1,15 JAN-MAR MON-FRI') p),
  row('{0}'::int[], '{0,20,40}'::int[], '{9,10,11,12,13,14,15,16,17}'::int[], '{1,15}'::int[],
      '{1,2,3}'::int[], '{1,2,3,4,5}'::int[], true, true)::text,
  'five fields: seconds 0, both days restricted');
select is((select p.seconds from pgxjob_cron_parse('5,10 * * * * *') p), '{5,10}'::int[],
  'six fields: seconds first');
select is((select p.weekdays from pgxjob_cron_parse('0 0 * * 0,7,SUN') p), '{0}'::int[],
  'Sunday as 0, 7 and SUN is one day');
select is((select p.either_day from pgxjob_cron_parse('0 0 */2 * MON') p), false,
  'a day field starting with * makes both days required');
select is((select row(p.*)::text from pgxjob_cron_parse('@hourly') p),
  (select row(p.*)::text from pgxjob_cron_parse('0 * * * *') p), 'a macro is its expression');
select is((select array_agg(p.frequent order by e.n)
           from unnest(array['30 2 * * *', '0 30 2 * * *', '@daily', '30 */2 * * *', '* 30 2 * * *',
                             '@hourly', '*/5 * * * *']) with ordinality e(cron, n)
           cross join lateral pgxjob_cron_parse(e.cron) p),
  '{f,f,f,t,t,t,t}'::boolean[],
  'frequent: the seconds, minute or hour field starts with *');
select is((select p.frequent from pgxjob_cron_parse('0-59 0-23 * * *') p), false,
  'frequent looks at the field, not the values it allows (a range is a fixed-time field)');
select is((select p.days from pgxjob_cron_parse('0 0 31 2 1') p), '{31}'::int[],
  'the 31st of February is allowed when a day of the week can match instead');

select * from finish();
rollback;
