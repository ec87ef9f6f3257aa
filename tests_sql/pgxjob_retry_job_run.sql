-- pgxjob_retry_job_run(job_id, run_number): a new job from a failed run.
begin;
\ir helpers.psql
select plan(11);

select t_setup();
select t_worker('g1') as w \gset
select pgxjob_schedule('t1', '{"order": 7}', group_name => 'g2') as failed \gset
select t_claim(:failed, :w);
select t_record(:failed, 0, 'boom');

select pgxjob_retry_job_run(:failed) as again \gset
select isnt(:again::bigint, :failed::bigint, 'a new job, with a new id');
select results_eq(
  format($$select g.name, t.name, j.params::text from pgxjob_asap_jobs j
    join pgxjob_groups g on g.id = j.group_id join pgxjob_job_types t on t.id = j.type_id
    where j.id = %s$$, :again),
  $$values ('g2'::text, 't1'::text, '{"order": 7}'::text)$$,
  'of the failed run''s type, group and params, waiting to run now'
);
select isnt(pgxjob_retry_job_run(:failed, 1), :again::bigint,
  'a run can be retried again: each call schedules a job');

select pgxjob_schedule('t1') as ok \gset
select t_claim(:ok, :w);
select t_record(:ok);
select throws_ok(format('select pgxjob_retry_job_run(%s)', :ok), 'PJ005',
  format('pgxjob: run 1 of job %s did not fail for good (its outcome is succeeded)', :ok),
  'a succeeded run cannot be retried');

select pgxjob_schedule('t1') as retried \gset
select t_claim(:retried, :w);
select t_record(:retried, 0, 'again', now() + interval '1 hour');
select throws_ok(format('select pgxjob_retry_job_run(%s, 1)', :retried), 'PJ005', null,
  'a run that is being retried cannot be retried by hand');

select throws_ok('select pgxjob_retry_job_run(-1)', 'PJ005',
  'pgxjob: job -1 has no run logged', 'an unknown job is refused, naming it');
select throws_ok(format('select pgxjob_retry_job_run(%s, 5)', :failed), 'PJ005',
  format('pgxjob: job %s has no run 5', :failed), 'an unknown run is refused, naming it');
select throws_ok('select pgxjob_retry_job_run(null)', 'PJ005', null, 'a null job is refused');

-- A failed run whose unique key is held again still schedules (the retry has no key).
select pgxjob_schedule('t1', unique_key => 'u') as keyed \gset
select t_claim(:keyed, :w);
select t_record(:keyed, 0, 'x');
select pgxjob_schedule('t1', unique_key => 'u');
select isnt(pgxjob_retry_job_run(:keyed), null::bigint, 'the retry carries no unique key');

-- The new job continues the failed run's trace.
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
select pgxjob_schedule('t1', trace_context => :'tp') as traced \gset
select t_claim(:traced, :w);
select t_record(:traced, 0, 'x');
select pgxjob_retry_job_run(:traced) as traced_again \gset
select is((select trace_context from pgxjob_asap_jobs where id = :traced_again), :'tp',
  'a retried run''s new job has its trace context');
select is((select trace_context from pgxjob_asap_jobs where id = :again), null,
  'one of a run without a trace context has none');

select * from finish();
rollback;
