-- pgxjob_cancel_requests(worker_id): the jobs a worker owns that have a cancel request.
begin;
\ir helpers.psql
select plan(3);

select t_setup();
select t_worker('g1') as w \gset
select t_worker('g1') as other \gset
select pgxjob_schedule('t1') as a \gset
select pgxjob_schedule('t1', run_at => now() + interval '1 second') as b \gset
select pgxjob_schedule('t1') as c \gset
select t_claim(:a, :w);
select t_claim(:b, :w);
select t_claim(:c, :other);

select is_empty(format('select * from pgxjob_cancel_requests(%s)', :w), 'none without requests');
select pgxjob_cancel_job(:a);
select pgxjob_cancel_job(:b);
select pgxjob_cancel_job(:c);
select results_eq(format('select * from pgxjob_cancel_requests(%s)', :w),
  format('values (%s::bigint), (%s)', :a, :b), 'the worker''s own requests, from both tables');
select is_empty('select * from pgxjob_cancel_requests(-1)', 'none for an unknown worker');

select * from finish();
rollback;
