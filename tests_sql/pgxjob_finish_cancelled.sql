-- pgxjob_finish_cancelled(job_ids, now): deletes the jobs, frees their keys, logs them cancelled.
begin;
\ir helpers.psql
select plan(4);

select t_setup();
select pgxjob_schedule('t1', unique_key => 'k') as a \gset
select pgxjob_schedule('t1', run_at => now() + interval '1 hour') as b \gset

select is(pgxjob_finish_cancelled(array[:a, :b, -1]::bigint[], now()), 2,
  'returns how many jobs it finished; unknown ids are skipped');
select is((select count(*)::int from pgxjob_asap_jobs) + (select count(*)::int from pgxjob_run_at_jobs),
  0, 'both jobs are gone');
select is((select count(*)::int from pgxjob_unique_keys), 0, 'the key is freed');
select results_eq('select outcome from pgxjob_job_runs order by job_id',
  $$values ('cancelled'::text), ('cancelled')$$, 'each is logged as cancelled');

select * from finish();
rollback;
