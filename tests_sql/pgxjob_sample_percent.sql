-- pgxjob_sample_percent(table, max_exact): 100 (count every row) up to max_exact unclaimed jobs,
-- a smaller share of the table beyond.
begin;
\ir helpers.psql
select plan(4);

select t_setup();
select is(pgxjob_public.pgxjob_sample_percent('asap', 10), 100::double precision,
  'an empty table is read whole');
select pgxjob_schedule_many('t1', array_fill('{}'::json, array[10]));
select is(pgxjob_public.pgxjob_sample_percent('asap', 10), 100::double precision,
  'max_exact jobs are still counted exactly');
select pgxjob_schedule('t1');
select cmp_ok(pgxjob_public.pgxjob_sample_percent('asap', 10), '<', 100::double precision,
  'one more is sampled');
select is(pgxjob_public.pgxjob_sample_percent('run_at', 10), 100::double precision,
  'each table is judged on its own');

select * from finish();
rollback;
