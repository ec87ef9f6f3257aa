-- pgxjob_describe_worker(worker_id, host, pid): where a worker runs.
begin;
\ir helpers.psql
select plan(4);

select t_setup();
select t_worker('g1') as w \gset

select is(pgxjob_describe_worker(:w, 'web-1', 4242), :w, 'returns the worker id');
select results_eq(format('select host, pid from pgxjob_workers where id = %s', :w),
  $$values ('web-1'::text, 4242)$$, 'the host and pid are stored');
select pgxjob_describe_worker(:w, repeat('h', 1000), 1);
select is((select length(host) from pgxjob_workers where id = :w), 255,
  'a host name is cut to 255 characters');
select is(pgxjob_describe_worker(-1, 'x', 1), -1, 'an unknown worker changes nothing');

select * from finish();
rollback;
