-- pgxjob_insert_job(...): inserts one job or returns the holder of its unique key.
begin;
\ir helpers.psql
select plan(10);

select t_setup();
select t_worker('g1') as w \gset

select pgxjob_schedule('t1', '{"v": 1}', unique_key => 'order-1') as first \gset
select is(pgxjob_schedule('t1', '{"v": 2}', unique_key => 'order-1'), :first::bigint,
  'a second job with the same key returns the first job''s id');
select is((select count(*)::int from pgxjob_asap_jobs), 1, 'and writes no job');
select is((select params::text from pgxjob_asap_jobs where id = :first), '{"v": 1}',
  'the first job is unchanged');
select isnt(pgxjob_schedule('t2', unique_key => 'order-1'), :first::bigint,
  'keys are per job type');
select isnt(pgxjob_schedule('t1', unique_key => 'order-2'), :first::bigint,
  'another key is another job');

-- The key follows the job through a retry and is freed when it finishes.
select t_claim(:first, :w);
select t_record(:first, 0, 'boom', now() + interval '1 minute');
select is(pgxjob_schedule('t1', unique_key => 'order-1'), :first::bigint,
  'a job waiting to retry still holds its key');
select t_claim(:first, :w);
select t_record(:first, 1);
select isnt(pgxjob_schedule('t1', unique_key => 'order-1'), :first::bigint,
  'a finished job frees its key');

select pgxjob_schedule('t1', run_at => now() + interval '1 hour', unique_key => 'later') as later \gset
select is(pgxjob_schedule('t1', unique_key => 'later'), :later::bigint,
  'a scheduled timed job holds its key too');

select throws_ok(format('select pgxjob_schedule(%L, unique_key => %L)', 't1', repeat('k', 1001)),
  'PJ005', 'pgxjob: unique_key is 1001 bytes long in UTF-8, more than 1000',
  'a key over 1000 bytes raises PJ005');
select is(pgxjob_schedule('t1', priority => 7, unique_key => null) > 0, true,
  'a null key is no key');

select * from finish();
rollback;
