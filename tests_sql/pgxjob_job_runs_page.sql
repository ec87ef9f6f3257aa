-- pgxjob_job_runs_page(...): the run log newest first, filtered, in keyset pages.
begin;
\ir helpers.psql
select plan(13);

select t_setup();
create function t_run(p_job bigint, p_run int, p_type text, p_finished timestamptz, p_outcome text)
returns void language sql as $$
  insert into pgxjob_job_runs (job_id, run_number, group_id, type_id, inserted_at, run_at,
    started_at, finished_at, error, outcome)
  select p_job, p_run, t.default_group_id, t.id, p_finished, p_finished, p_finished, p_finished,
    case when p_outcome = 'failed' then 'boom' end, p_outcome
  from pgxjob_job_types t where t.name = p_type
$$;
-- Runs from seconds to two years old; jobs 1 to 3 finished at the same instant.
select t_run(1, 1, 't1', now() - interval '5 seconds', 'succeeded');
select t_run(2, 1, 't1', now() - interval '5 seconds', 'failed');
select t_run(3, 1, 't2', now() - interval '5 seconds', 'succeeded');
select t_run(3, 2, 't2', now() - interval '5 seconds', 'succeeded');
select t_run(4, 1, 't1', now() - interval '2 hours', 'succeeded');
select t_run(5, 1, 't2', now() - interval '3 days', 'failed');
select t_run(6, 1, 't1', now() - interval '2 years', 'succeeded');

select results_eq(
  $$select job_id, run_number from pgxjob_job_runs_page()$$,
  $$values (3::bigint, 2), (3, 1), (2, 1), (1, 1), (4, 1), (5, 1), (6, 1)$$,
  'every run, newest first, ties by job id and run number, descending'
);
select results_eq(
  $$select job_id, run_number from pgxjob_job_runs_page(max_rows => 3)$$,
  $$values (3::bigint, 2), (3, 1), (2, 1)$$,
  'a page holds max_rows runs'
);
select results_eq(
  $$select job_id, run_number from pgxjob_job_runs_page(max_rows => 3,
      after_finished_at => now() - interval '5 seconds', after_job_id => 2,
      after_run_number => 1)$$,
  $$values (1::bigint, 1), (4, 1), (5, 1)$$,
  'the next page starts after the last row of the previous one, within a tie'
);
select results_eq(
  $$select job_id, run_number from pgxjob_job_runs_page(max_rows => 3,
      after_finished_at => now() - interval '3 days', after_job_id => 5,
      after_run_number => 1)$$,
  $$values (6::bigint, 1)$$,
  'the last page reaches runs older than every window'
);
select results_eq(
  $$select job_id from pgxjob_job_runs_page(of_type => 't2')$$,
  $$values (3::bigint), (3), (5)$$,
  'filtered by type'
);
select results_eq(
  $$select job_id from pgxjob_job_runs_page(in_group => 'g1')$$,
  $$values (2::bigint), (1), (4), (6)$$,
  'filtered by group'
);
select results_eq(
  $$select job_id, error from pgxjob_job_runs_page(with_outcome => 'failed')$$,
  $$values (2::bigint, 'boom'::text), (5, 'boom')$$,
  'filtered by outcome, with the error'
);
select results_eq(
  $$select job_id from pgxjob_job_runs_page(since => now() - interval '1 day',
      until => now() - interval '1 hour')$$,
  $$values (4::bigint)$$,
  'filtered by finish time: since inclusive, until exclusive'
);
select is_empty(
  $$select * from pgxjob_job_runs_page(until => now() - interval '5 seconds', of_type => 't2',
      since => now() - interval '1 day')$$,
  'until excludes runs that finished at that instant'
);
select throws_ok($$select * from pgxjob_job_runs_page(with_outcome => 'exploded')$$, 'PJ005',
  'pgxjob: unknown outcome "exploded"', 'an unknown outcome names it');
select throws_ok($$select * from pgxjob_job_runs_page(after_job_id => 1)$$, 'PJ005', null,
  'a partial cursor is refused');
select throws_ok($$select * from pgxjob_job_runs_page(of_type => 'nope')$$, 'PJ001', null,
  'an unknown type is refused');
select throws_ok($$select * from pgxjob_job_runs_page(max_rows => 0)$$, 'PJ005', null,
  'max_rows must be positive');

select * from finish();
rollback;
