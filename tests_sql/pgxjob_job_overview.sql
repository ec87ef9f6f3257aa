-- pgxjob_job_overview(now, max_exact): jobs per group and type as waiting, due, scheduled and
-- running; exact up to max_exact unclaimed jobs per table, sampled and scaled beyond.
begin;
\ir helpers.psql
select plan(9);

select t_setup();
select results_eq(
  $$select group_name, job_type, waiting, due, scheduled, running, estimated
    from pgxjob_job_overview()$$,
  $$values ('default', 't2', 0::bigint, 0::bigint, 0::bigint, 0::bigint, false),
           ('g1', 't1', 0, 0, 0, 0, false)$$,
  'idle registered types read as zeros in their default groups'
);

select t_worker('g1') as w \gset
select pgxjob_schedule('t1');
select pgxjob_schedule('t1');
select pgxjob_schedule('t1', group_name => 'g2');
select pgxjob_schedule('t1', run_at => now() + interval '1 minute');
select pgxjob_schedule('t1', run_at => now() + interval '1 hour');
select pgxjob_schedule('t2') as claimed \gset
select t_claim(:claimed, :w);
select pgxjob_schedule('t1') as retrying \gset
select t_claim(:retrying, :w);
select t_record(:retrying, 0, 'boom', now() + interval '10 minutes');

select results_eq(
  $$select group_name, job_type, waiting, due, scheduled, running, estimated
    from pgxjob_job_overview()$$,
  $$values ('default', 't2', 0::bigint, 0::bigint, 0::bigint, 1::bigint, false),
           ('g1', 't1', 2, 0, 3, 0, false),
           ('g2', 't1', 1, 0, 0, 0, false)$$,
  'ASAP jobs wait, timed jobs and retries are scheduled, claimed jobs run, groups apart'
);
select results_eq(
  $$select group_name, job_type, waiting, due, scheduled
    from pgxjob_job_overview(now() + interval '30 minutes') where group_name = 'g1'$$,
  $$values ('g1', 't1', 2::bigint, 2::bigint, 1::bigint)$$,
  'on a later clock, timed jobs and retries whose time has come are due'
);

select pgxjob_schedule_many('t1', array_fill('{}'::json, array[3000]));
select is((select estimated from pgxjob_job_overview(p_max_exact => 100) where job_type = 't1'
           and group_name = 'g1'),
  true, 'beyond max_exact the counts are estimated and say so');
-- A sample is random: the mean of ten estimates, each from about a third of the table, lands
-- well within 40% of the truth. (The clock argument depends on n so that each row calls anew.)
analyze pgxjob_asap_jobs;
select cmp_ok(
  (select avg(o.waiting) from generate_series(1, 10) n
   cross join lateral (select waiting
                       from pgxjob_job_overview(now() + (n - n) * interval '1 second', 1000)
                       where job_type = 't1' and group_name = 'g1') o),
  '>', 1800::numeric, 'a sampled count is scaled up to the table');
select cmp_ok(
  (select avg(o.waiting) from generate_series(1, 10) n
   cross join lateral (select waiting
                       from pgxjob_job_overview(now() + (n - n) * interval '1 second', 1000)
                       where job_type = 't1' and group_name = 'g1') o),
  '<', 4200::numeric, 'and not beyond it');
select is(
  (select waiting from pgxjob_job_overview(p_max_exact => 100000)
   where job_type = 't1' and group_name = 'g1'),
  3002::bigint, 'below max_exact every job is counted');
select is(
  (select running from pgxjob_job_overview(p_max_exact => 100) where job_type = 't2'),
  1::bigint, 'running jobs are counted exactly even when sampling');
select throws_ok($$select * from pgxjob_job_overview(p_max_exact => 0)$$, 'PJ005', null,
  'max_exact must be positive');

select * from finish();
rollback;
