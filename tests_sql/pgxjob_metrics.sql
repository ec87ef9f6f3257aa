-- pgxjob_metrics(now): the database's Prometheus samples in one call.
begin;
\ir helpers.psql
select plan(4);

select t_setup();
select t_worker('g1', now() + interval '1 day') as w \gset
select pgxjob_schedule('t1');
select pgxjob_schedule('t1');
select pgxjob_schedule('t1', run_at => now() + interval '1 hour');
insert into pgxjob_asap_jobs (group_id, type_id, inserted_at)
select g.id, t.id, now() - interval '90 seconds'
from pgxjob_groups g, pgxjob_job_types t where g.name = 'g2' and t.name = 't1';

select results_eq(
  $$select state, value from pgxjob_metrics(now() + interval '1 day')
    where metric = 'pgxjob_jobs' and group_name = 'g1' and job_type = 't1' order by state$$,
  $$values ('due'::text, 1::double precision), ('running', 0), ('scheduled', 0),
           ('waiting', 2)$$,
  'pgxjob_jobs: one sample per state of each group and type'
);
select results_eq(
  $$select group_name, value from pgxjob_metrics()
    where metric = 'pgxjob_oldest_waiting_job_age_seconds' order by group_name$$,
  $$values ('default'::text, 0::double precision), ('g1', 0), ('g2', 90)$$,
  'pgxjob_oldest_waiting_job_age_seconds: per group, 0 when nothing waits'
);
select results_eq(
  $$select state, value from pgxjob_metrics(now() + interval '1 day')
    where metric = 'pgxjob_workers' and group_name = 'g1' order by state$$,
  $$values ('alive'::text, 1::double precision), ('dead', 0), ('stale', 0)$$,
  'pgxjob_workers: per group and state'
);
select is_empty(
  $$select * from pgxjob_metrics() where metric not in
    ('pgxjob_jobs', 'pgxjob_oldest_waiting_job_age_seconds', 'pgxjob_workers')$$,
  'no other metric'
);

select * from finish();
rollback;
