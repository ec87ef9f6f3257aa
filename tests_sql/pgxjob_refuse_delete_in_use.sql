-- pgxjob_refuse_delete_in_use(): the trigger that keeps job types and groups that jobs still use.
begin;
\ir helpers.psql
select plan(5);

select t_setup();
select pgxjob_schedule('t1') as job \gset
select pgxjob_schedule('t2', run_at => now() + interval '1 hour');

select throws_ok($$delete from pgxjob_job_types where name = 't1'$$, '23503',
  'pgxjob: job type "t1" still has jobs and cannot be deleted',
  'a job type with an ASAP job cannot be deleted');
select throws_ok($$delete from pgxjob_job_types where name = 't2'$$, '23503', null,
  'a job type with a timed job cannot be deleted');
select throws_ok($$delete from pgxjob_groups where name = 'default'$$, '23503', null,
  'a group with jobs cannot be deleted');

delete from pgxjob_asap_jobs where id = :job;
select lives_ok($$delete from pgxjob_job_types where name = 't1'$$,
  'once its jobs are gone, the job type can be deleted');
select lives_ok($$delete from pgxjob_groups where name = 'g2'$$,
  'a group without jobs, types or workers can be deleted');

select * from finish();
rollback;
