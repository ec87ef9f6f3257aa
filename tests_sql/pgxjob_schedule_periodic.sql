-- pgxjob_schedule_periodic, pgxjob_unschedule_periodic, pgxjob_periodic_job_status and the firing
-- in pgxjob_fetch_jobs: one job per fire time, on the database's clock.
begin;
\ir helpers.psql
select plan(17);

select t_setup();
select t_worker('g1') as w \gset
select t_worker('g1') as w2 \gset

select pgxjob_schedule_periodic('every_minute', '* * * * *', 't1', '{"p": 1}', priority => 4)
  as schedule_id \gset
select is(
  (select next_fire_at from pgxjob_periodic_jobs where id = :schedule_id),
  date_trunc('minute', now()) + interval '1 minute',
  'a new schedule first fires at its next fire time after now'
);
select is(
  pgxjob_schedule_periodic('every_minute', '* * * * *', 't1', '{"p": 1}', priority => 4),
  :schedule_id::bigint, 'scheduling the same name again updates the same row'
);
select throws_ok($$select pgxjob_schedule_periodic('bad', '61 * * * *', 't1')$$, 'PJ007', null,
  'a bad cron expression raises PJ007 at once');
select throws_ok($$select pgxjob_schedule_periodic('bad', '* * * * *', 't1', time_zone => 'Mars/Base')$$,
  'PJ007', null, 'an unknown time zone raises PJ007 at once');
select throws_ok($$select pgxjob_schedule_periodic('bad', '* * * * *', 'nope')$$, 'PJ001', null,
  'an unknown job type raises PJ001');
select throws_ok($$select pgxjob_schedule_periodic('', '* * * * *', 't1')$$, 'PJ003', null,
  'an empty name raises PJ003');

-- Not due yet: a fetch fires nothing; the worker's wake-up counts the schedule.
select is_empty(format('select * from pgxjob_fetch_jobs(%s, 10)', :w), 'nothing is due yet');
select ok(pgxjob_next_run_in(:w) <= interval '1 minute', 'the next fire time wakes the group');

-- Due: the fetch fires it once and claims the job.
select results_eq(
  format($q$select type_name, params::text, priority from pgxjob_fetch_jobs(%s, 10,
            date_trunc('minute', now()) + interval '1 minute 5 seconds')$q$, :w),
  $$values ('t1'::text, '{"p": 1}'::text, 4)$$,
  'a due schedule becomes one job, claimed by the fetch that fired it'
);
select is(
  (select next_fire_at from pgxjob_periodic_jobs where id = :schedule_id),
  date_trunc('minute', now()) + interval '2 minutes',
  'the schedule moves on to its next fire time'
);
select is_empty(
  format($q$select * from pgxjob_fetch_jobs(%s, 10,
            date_trunc('minute', now()) + interval '1 minute 30 seconds')$q$, :w2),
  'another worker in the same minute fires nothing: one job per fire time'
);

-- Missed fire times (no worker ran for ten minutes): one job, then on from now.
select count(*) from pgxjob_fetch_jobs(:w2, 10, date_trunc('minute', now()) + interval '12 minutes 10 seconds');
select is(
  (select count(*)::int from pgxjob_asap_jobs where type_id = (select id from pgxjob_job_types where name = 't1')),
  2, 'ten missed fire times make one job'
);
select is(
  (select next_fire_at from pgxjob_periodic_jobs where id = :schedule_id),
  date_trunc('minute', now()) + interval '13 minutes',
  'and the schedule continues from now'
);
select is(
  (select last_fired_at from pgxjob_periodic_jobs where id = :schedule_id),
  date_trunc('minute', now()) + interval '12 minutes',
  'the one job stands for the latest missed fire time'
);

select results_eq(
  'select name, cron, job_type, group_name, priority from pgxjob_periodic_job_status()',
  $$values ('every_minute'::text, '* * * * *'::text, 't1'::text, 'g1'::text, 4)$$,
  'the status lists the schedule with its type and group'
);
select ok(pgxjob_unschedule_periodic('every_minute'), 'unscheduling returns true');
select ok(not pgxjob_unschedule_periodic('every_minute'), 'and false when there is none');

select * from finish();
rollback;
