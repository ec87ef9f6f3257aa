-- pgxjob_job_counts: jobs per group and type in four disjoint states (due, scheduled, retrying,
-- locked), registered idle types as zeros, and the clock moved through p_now.
begin;
\ir helpers.psql
select plan(10);

select is(
  (select count(*) from pgxjob_job_counts()),
  0::bigint,
  'no registered type and no job: no rows'
);

select pgxjob_register_group('emails');
select pgxjob_register_job_type('confirm_order');
select pgxjob_register_job_type('send_receipt', 'emails');

select results_eq(
  $$ select group_name, job_type, due, scheduled, retrying, locked
     from pgxjob_job_counts() $$,
  $$ values ('default', 'confirm_order', 0::bigint, 0::bigint, 0::bigint, 0::bigint),
            ('emails', 'send_receipt', 0, 0, 0, 0) $$,
  'an idle registered type reads as zeros in its default group'
);

-- Three ASAP confirm_order jobs, one in the emails group (not its default), and a timed receipt.
select pgxjob_schedule('confirm_order', '{"order_id": 1}');
select pgxjob_schedule('confirm_order', '{"order_id": 2}');
select pgxjob_schedule('confirm_order', '{"order_id": 3}', group_name => 'emails');
select pgxjob_schedule('send_receipt', null, run_at => now() + interval '1 hour');

select results_eq(
  $$ select group_name, job_type, due, scheduled, retrying, locked
     from pgxjob_job_counts() $$,
  $$ values ('default', 'confirm_order', 2::bigint, 0::bigint, 0::bigint, 0::bigint),
            ('emails', 'confirm_order', 1, 0, 0, 0),
            ('emails', 'send_receipt', 0, 1, 0, 0) $$,
  'ASAP jobs are due, a future timed job is scheduled, a job in another group has its own row'
);

select is(
  (select due from pgxjob_job_counts(now() + interval '2 hours') where job_type = 'send_receipt'),
  1::bigint,
  'a timed job counts as due once p_now reaches its run_at'
);

select is(
  (select oldest_due_at from pgxjob_job_counts()
   where group_name = 'default' and job_type = 'confirm_order'),
  now(),
  'oldest_due_at is when the longest-waiting due job became due'
);

select is(
  (select oldest_due_at from pgxjob_job_counts() where job_type = 'send_receipt'),
  null,
  'oldest_due_at is null when nothing is due'
);

-- A worker of the default group claims one job and fails it with a linear-backoff retry.
select pgxjob_register_worker('default', interval '5 minutes') as worker_id \gset
select id as job_id from pgxjob_fetch_jobs(:worker_id, 1) \gset

select results_eq(
  $$ select due, locked from pgxjob_job_counts()
     where group_name = 'default' and job_type = 'confirm_order' $$,
  $$ values (1::bigint, 1::bigint) $$,
  'a claimed job is locked, not due'
);

select * from pgxjob_record_job_results(
  :worker_id, array[:job_id]::bigint[], array[0], array[now()], array[now()], array['payment declined'],
  array[null::timestamptz], array[3], array[interval '1 minute'], array[true]
);

select results_eq(
  $$ select due, scheduled, retrying, locked from pgxjob_job_counts()
     where group_name = 'default' and job_type = 'confirm_order' $$,
  $$ values (1::bigint, 0::bigint, 1::bigint, 0::bigint) $$,
  'a failed job waiting for its retry time is retrying, not scheduled'
);

select is(
  (select due from pgxjob_job_counts(now() + interval '2 minutes')
   where group_name = 'default' and job_type = 'confirm_order'),
  2::bigint,
  'a retry whose time has come is due again'
);

select is(
  (select sum(due + scheduled + retrying + locked)::bigint from pgxjob_job_counts()),
  (select count(*) from pgxjob_asap_jobs) + (select count(*) from pgxjob_run_at_jobs),
  'the four states add up to every job in the hot tables'
);

select * from finish();
rollback;
