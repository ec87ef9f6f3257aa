-- pgxjob_run_job_now(job_id, now): a job scheduled for later becomes due now.
begin;
\ir helpers.psql
select plan(8);

select t_setup();
select t_worker('g1') as w \gset
select pgxjob_schedule('t1', run_at => now() + interval '1 day') as timed \gset

select is(pgxjob_run_job_now(:timed), 'due', 'a timed job becomes due');
select is((select next_run_at from pgxjob_run_at_jobs where id = :timed), now(),
  'its next run is now');
select results_eq(format('select id from pgxjob_fetch_jobs(%s, 10)', :w),
  format('values (%s::bigint)', :timed), 'the next fetch claims it');
select is(pgxjob_run_job_now(:timed), 'running', 'a claimed job is left alone');

select pgxjob_schedule('t1') as asap \gset
select is(pgxjob_run_job_now(:asap), 'already_due', 'an ASAP job is due already');
select pgxjob_schedule('t1', run_at => now() + interval '1 day') as retrying \gset
select t_claim(:retrying, :w);
select t_record(:retrying, 0, 'boom', now() + interval '1 hour');
select is(pgxjob_run_job_now(:retrying, now() + interval '2 hours'), 'already_due',
  'a retry whose time has come is due already');
select is(pgxjob_run_job_now(:retrying), 'due', 'a job waiting to retry runs now');
select is(pgxjob_run_job_now(-1), 'not_found', 'an unknown job is not found');

select * from finish();
rollback;
