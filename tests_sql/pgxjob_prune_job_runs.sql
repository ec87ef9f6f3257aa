-- pgxjob_prune_job_runs(older_than): deletes run-log rows that finished more than older_than ago.
begin;
\ir helpers.psql
select plan(8);

insert into pgxjob_job_runs (
  job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at
)
select n, 1, 1, 1, now() - d, now() - d, now() - d, now() - d
from (values (1, interval '40 days'), (2, interval '31 days'), (3, interval '29 days'),
             (4, interval '1 second'), (5, interval '0')) as x(n, d);

select is(pgxjob_prune_job_runs(interval '30 days'), 2::bigint,
  'returns how many rows were deleted');
select results_eq('select job_id from pgxjob_job_runs order by job_id',
  'values (3::bigint), (4), (5)', 'runs finished more than older_than ago are gone, others stay');
select is(pgxjob_prune_job_runs(interval '30 days'), 0::bigint, 'pruning again deletes nothing');
select is(pgxjob_prune_job_runs(older_than => interval '1 day'), 1::bigint,
  'named notation works');
select is(pgxjob_prune_job_runs(interval '0'), 1::bigint,
  'older_than 0 deletes every run that finished before now');
select results_eq('select job_id from pgxjob_job_runs', 'values (5::bigint)',
  'a run that finished exactly now is kept');
select throws_ok($$select pgxjob_prune_job_runs(null)$$, 'PJ005', null,
  'a null older_than raises PJ005');
select throws_ok($$select pgxjob_prune_job_runs(interval '-1 day')$$, 'PJ005', null,
  'a negative older_than raises PJ005');

select * from finish();
rollback;
