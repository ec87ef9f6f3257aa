-- pgxjob_release_unknown_jobs(worker_id, known): frees the jobs a worker owns but lost track of.
begin;
\ir helpers.psql
select plan(6);

select t_setup();
select t_worker('g1') as w \gset
select t_worker('g1') as w_other \gset

select pgxjob_schedule('t1') as a1 \gset
select pgxjob_schedule('t1') as a2 \gset
select pgxjob_schedule('t1', null, null, now() + interval '1 minute') as r1 \gset
select count(*) from pgxjob_fetch_jobs(:w, 10, now() + interval '2 minutes');
select pgxjob_schedule('t1') as other \gset
select count(*) from pgxjob_fetch_jobs(:w_other, 10);

listen pgxjob_job_available;
select is(pgxjob_release_unknown_jobs(:w, array[:a1]::bigint[]), 2,
  'releases the owned jobs that are not known: one ASAP, one timed');
select is((select worker_id from pgxjob_asap_jobs where id = :a1), :w, 'a known job stays owned');
select ok((select worker_id is null from pgxjob_asap_jobs where id = :a2)
  and (select worker_id is null from pgxjob_run_at_jobs where id = :r1), 'the unknown ones are free');
select is((select worker_id from pgxjob_asap_jobs where id = :other), :w_other,
  'another worker''s jobs are untouched');
select is(pgxjob_release_unknown_jobs(:w, array[:a1]::bigint[]), 0, 'nothing left to release');
select is(pgxjob_release_unknown_jobs(:w, null), 1, 'a null list knows nothing: all is released');

select * from finish();
rollback;
