-- pgxjob_job_detail(job_id, now): one job and every run of it, as JSON.
begin;
\ir helpers.psql
select plan(11);

select t_setup();
select pgxjob_describe_worker(t_worker('g1'), 'box', 7) as w \gset

select ok(pgxjob_job_detail(-1) is null, 'an unknown job is null');

select pgxjob_schedule('t1', '{"x": "<script>"}', priority => 3, unique_key => 'k') as job \gset
select results_eq(
  format($$select d->'job'->>'state', d->'job'->>'job_type', d->'job'->>'group_name',
      d->'job'->'params'->>'x', (d->'job'->>'priority')::int, d->'job'->>'unique_key',
      json_array_length(d->'runs')
    from pgxjob_job_detail(%s) d$$, :job),
  $$values ('waiting'::text, 't1'::text, 'g1'::text, '<script>'::text, 3, 'k'::text, 0)$$,
  'a waiting job: state, type, group, params, priority, unique key, no runs'
);

select t_claim(:job, :w);
select results_eq(
  format($$select d->'job'->>'state', (d->'job'->>'worker_id')::int, d->'job'->>'worker_host',
      (d->'job'->>'worker_pid')::int
    from pgxjob_job_detail(%s) d$$, :job),
  format($$values ('running'::text, %s, 'box'::text, 7)$$, :w),
  'a claimed job runs, with its worker, host and pid'
);

select t_record(:job, 0, 'first failure', now() + interval '1 hour');
select results_eq(
  format($$select d->'job'->>'state', (d->'job'->>'error_count')::int, d->'job'->>'last_error',
      json_array_length(d->'runs'), d->'runs'->0->>'outcome'
    from pgxjob_job_detail(%s) d$$, :job),
  $$values ('retrying'::text, 1, 'first failure'::text, 1, 'retried'::text)$$,
  'a job waiting to retry: its attempts, last error and the retried run'
);
select is((pgxjob_job_detail(:job, now() + interval '2 hours')->'job'->>'state'), 'due',
  'a retry whose time has come is due');

select pgxjob_schedule('t1', run_at => now() + interval '1 day') as timed \gset
select is((pgxjob_job_detail(:timed)->'job'->>'state'), 'scheduled', 'a timed job is scheduled');

select t_claim(:job, :w);
select t_record(:job, 1, 'final failure');
select is(pgxjob_job_detail(:job)->>'job', null, 'a finished job is gone from "job"');
select results_eq(
  format($$select r->>'outcome', r->>'error', (r->>'run_number')::int
    from pgxjob_job_detail(%s) d, json_array_elements(d->'runs') r$$, :job),
  $$values ('retried'::text, 'first failure'::text, 1), ('failed', 'final failure', 2)$$,
  'every run, oldest first, with its outcome and error'
);
select ok(pgxjob_job_detail(null) is null, 'a null id is null');

-- The trace context of the job and of each run, for the operator to find the trace.
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
select pgxjob_schedule('t1', trace_context => :'tp') as traced \gset
select is(pgxjob_job_detail(:traced)->'job'->>'trace_context', :'tp',
  'a waiting job shows its trace context');
select t_claim(:traced, :w);
select t_record(:traced);
select is(pgxjob_job_detail(:traced)->'runs'->0->>'trace_context', :'tp',
  'a finished job''s runs show it');

select * from finish();
rollback;
