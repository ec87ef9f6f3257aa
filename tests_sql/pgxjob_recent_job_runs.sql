-- pgxjob_recent_job_runs(max_rows, failed_only, of_type, in_group): the newest run-log
-- rows first, with filters, over widening time windows.
begin;
\ir helpers.psql
select plan(14);

select t_setup();

-- Run-log rows written directly, so finished_at can be placed anywhere in time: one per hour
-- over the last three hours, one 10 days ago and one 100 days ago (older than every window).
insert into pgxjob_job_runs (
  job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at, params,
  error
)
select v.job_id, v.run_number, g.id, t.id, v.finished_at, v.finished_at, v.finished_at,
  v.finished_at, v.params::json, v.error
from (values
  (1, 1, 'g1', 't1', now() - interval '30 minutes', '{"n": 1}', null),
  (2, 1, 'default', 't2', now() - interval '90 minutes', null, 'smtp timeout'),
  (2, 2, 'default', 't2', now() - interval '80 minutes', null, null),
  (3, 1, 'g1', 't1', now() - interval '150 minutes', null, 'card declined'),
  (4, 1, 'g2', 't1', now() - interval '10 days', null, null),
  (5, 1, 'g1', 't1', now() - interval '100 days', null, 'ancient')
) as v(job_id, run_number, group_name, type_name, finished_at, params, error)
join pgxjob_groups g on g.name = v.group_name
join pgxjob_job_types t on t.name = v.type_name;

select results_eq(
  'select job_id, run_number from pgxjob_recent_job_runs()',
  $$ values (1::bigint, 1), (2, 2), (2, 1), (3, 1), (4, 1), (5, 1) $$,
  'every run, newest first, when fewer than max_rows exist (the whole log is searched)'
);

select results_eq(
  'select job_id, run_number from pgxjob_recent_job_runs(max_rows => 2)',
  $$ values (1::bigint, 1), (2, 2) $$,
  'max_rows limits to the newest runs'
);

select results_eq(
  'select job_id, run_number from pgxjob_recent_job_runs(max_rows => 4)',
  $$ values (1::bigint, 1), (2, 2), (2, 1), (3, 1) $$,
  'a window that holds too few runs widens to the next one'
);

select results_eq(
  'select job_id from pgxjob_recent_job_runs(failed_only => true)',
  $$ values (2::bigint), (3), (5) $$,
  'failed_only returns only runs with an error'
);

select results_eq(
  $$ select job_id from pgxjob_recent_job_runs(of_type => 't2') $$,
  $$ values (2::bigint), (2) $$,
  'of_type filters by job type'
);

select results_eq(
  $$ select job_id from pgxjob_recent_job_runs(in_group => 'g2') $$,
  $$ values (4::bigint) $$,
  'in_group filters by group'
);

select row_eq(
  $$ select job_id, run_number, group_name, job_type, params::text, error,
       finished_at = now() - interval '30 minutes'
     from pgxjob_recent_job_runs(max_rows => 1) $$,
  row(1::bigint, 1, 'g1'::text, 't1'::text, '{"n": 1}'::text, null::text, true),
  'a run carries its group and type names, params, error and times'
);

-- The windows are an optimisation only: for every max_rows the result is the plain top-n.
select is(
  (select count(*) from generate_series(1, 7) as n
   where array(select array[job_id, run_number] from pgxjob_recent_job_runs(max_rows => n))
     is distinct from array(
       select array[job_id, run_number::bigint]
       from pgxjob_job_runs
       order by finished_at desc, job_id desc, run_number desc
       limit n
     )),
  0::bigint,
  'for every max_rows the windows return the same runs as a top-n over the whole log'
);

select throws_ok(
  $$ select * from pgxjob_recent_job_runs(of_type => 'no_such_type') $$,
  'PJ001',
  'pgxjob: unknown job type "no_such_type"',
  'an unknown job type is an error, not an empty result'
);

select throws_ok(
  $$ select * from pgxjob_recent_job_runs(in_group => 'no_such_group') $$,
  'PJ002',
  'pgxjob: unknown group "no_such_group"',
  'an unknown group is an error, not an empty result'
);

select throws_ok(
  $$ select * from pgxjob_recent_job_runs(max_rows => 0) $$,
  'PJ005',
  'pgxjob: max_rows must be a positive number, got 0',
  'max_rows must be positive'
);

select is_empty(
  $$ select * from pgxjob_recent_job_runs(failed_only => true, of_type => 't2', in_group => 'g1') $$,
  'filters combine'
);

-- One job's runs, with outcome and output, found through the primary key whatever their age.
update pgxjob_job_runs set outcome = 'retried' where job_id = 2 and run_number = 1;
update pgxjob_job_runs set outcome = 'succeeded', output = '{"sent": 1}' where job_id = 2 and run_number = 2;
select results_eq(
  'select run_number, outcome, output::text from pgxjob_recent_job_runs(of_job => 2)',
  $$ values (2, 'succeeded'::text, '{"sent": 1}'::text), (1, 'retried', null) $$,
  'of_job lists one job''s runs, newest first, with their outcome and output'
);
select results_eq(
  'select job_id from pgxjob_recent_job_runs(of_job => 5)',
  $$ values (5::bigint) $$,
  'of_job finds a run older than every time window'
);

select * from finish();
rollback;
