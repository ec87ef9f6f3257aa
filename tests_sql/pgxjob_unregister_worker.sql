-- pgxjob_unregister_worker(worker_id): deletes the worker row, releasing the jobs it owned.
begin;
\ir helpers.psql
select plan(7);

select t_setup();
select t_worker('g1') as w \gset
select t_worker('g1') as other \gset
select pgxjob_schedule('t1') as asap \gset
select pgxjob_schedule('t1', null, null, now() + interval '1 second') as timed \gset
select count(*) from pgxjob_fetch_jobs(:w, 2, now() + interval '1 second');
select pgxjob_schedule('t1') as others_job \gset
select count(*) from pgxjob_fetch_jobs(:other, 10, now() + interval '1 second');
select is(t_owner(:others_job), :other, 'the other worker owns the third job');

select ok(pgxjob_unregister_worker(:w), 'unregistering a registered worker returns true');
select ok(not exists (select 1 from pgxjob_workers where id = :w), 'the worker row is gone');
select is(t_owner(:asap), null, 'its ASAP job is released');
select is(t_owner(:timed), null, 'its timed job is released');
select is(t_owner(:others_job), :other, 'another worker''s job is untouched');
select ok(not pgxjob_unregister_worker(:w), 'unregistering twice returns false');

select * from finish();
rollback;
