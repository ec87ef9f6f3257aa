-- pgxjob_cancel_job(job_id, now): removes a waiting job, asks a running job's worker to stop, and
-- says which it did.
begin;
\ir helpers.psql
select plan(19);

select t_setup();
select t_worker('g1') as w \gset

-- A waiting ASAP job: removed, logged as cancelled, its unique key freed.
select pgxjob_schedule('t1', '{"a": 1}', unique_key => 'k1') as waiting \gset
select is(pgxjob_cancel_job(:waiting), 'cancelled', 'a waiting job is cancelled at once');
select is(t_job_table(:waiting), null, 'it is removed');
select results_eq(
  format('select run_number, outcome, error, params::text from pgxjob_job_runs where job_id = %s',
         :waiting),
  $$values (1, 'cancelled'::text, null::text, '{"a": 1}'::text)$$,
  'it gets one run-log row with outcome cancelled'
);
select isnt(pgxjob_schedule('t1', unique_key => 'k1'), :waiting::bigint,
  'its unique key is free again');

-- A scheduled (timed) job and a job waiting to retry.
select pgxjob_schedule('t1', run_at => now() + interval '1 hour') as timed \gset
select is(pgxjob_cancel_job(:timed), 'cancelled', 'a timed job is cancelled at once');
select pgxjob_schedule('t1') as retrying \gset
select t_claim(:retrying, :w);
select t_record(:retrying, 0, 'boom', now() + interval '1 hour');
select is(pgxjob_cancel_job(:retrying), 'cancelled', 'a job waiting to retry is cancelled at once');
select is((select outcome from pgxjob_job_runs where job_id = :retrying and run_number = 2),
  'cancelled', 'its cancellation is logged as the next run');

-- A running job: a request, a notification to its worker, and cancellation when it finishes.
select pgxjob_schedule('t1') as running \gset
select t_claim(:running, :w);
listen pgxjob_job_cancel;
select is(pgxjob_cancel_job(:running), 'cancel_requested', 'a running job gets a cancel request');
select is((select cancel_requested from pgxjob_asap_jobs where id = :running), true,
  'the request is stored on the job');
select is(t_owner(:running), :w, 'the job stays with its worker while the handler runs');
select results_eq(format('select * from pgxjob_cancel_requests(%s)', :w),
  format('values (%s::bigint)', :running), 'the worker can poll for its cancel requests');
select is(t_record(:running, 0, 'stopped', now() + interval '1 minute'), 1,
  'the handler''s result is recorded');
select is(t_job_table(:running), null, 'a cancelled job is finished, not retried');
select is((select outcome from pgxjob_job_runs where job_id = :running), 'cancelled',
  'its run is logged as cancelled');

-- A running job whose worker dies: the release finishes it as cancelled.
select pgxjob_schedule('t1') as orphan \gset
select t_claim(:orphan, :w);
select pgxjob_cancel_job(:orphan);
select pgxjob_unregister_worker(:w);
select is(t_job_table(:orphan), null,
  'a cancel-requested job whose worker is gone is finished, not released to run again');

select is(pgxjob_cancel_job(:running), 'not_found', 'a finished job is not found');
select is(pgxjob_cancel_job(-1), 'not_found', 'an unknown job is not found');

-- The cancelled run keeps the job's trace context, from either table.
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
select pgxjob_schedule('t1', trace_context => :'tp') as traced \gset
select pgxjob_cancel_job(:traced);
select is((select trace_context from pgxjob_job_runs where job_id = :traced), :'tp',
  'a cancelled ASAP job''s run keeps its trace context');
select pgxjob_schedule('t1', run_at => now() + interval '1 hour', trace_context => :'tp')
  as traced_timed \gset
select pgxjob_cancel_job(:traced_timed);
select is((select trace_context from pgxjob_job_runs where job_id = :traced_timed), :'tp',
  'a cancelled timed job''s run keeps it');

select * from finish();
rollback;
