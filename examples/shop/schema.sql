-- The example shop's own schema. Run it after `pgxjob migrate`; it is idempotent.
-- An order's insert trigger schedules its confirmation with pgxjob_schedule, in the same
-- transaction as the insert: no order without its job, and no job for a rolled-back order.

-- Registered from SQL, so the trigger works before any Python worker has started.
select pgxjob_register_group('emails');
select pgxjob_register_job_type('confirm_order', 'default');
select pgxjob_register_job_type('send_receipt', 'emails');
select pgxjob_register_job_type('request_review', 'emails');

create table if not exists shop_orders (
  id bigint generated always as identity primary key,
  customer_email text not null,
  total_cents int not null,
  status text not null default 'new',
  created_at timestamptz not null default now(),
  confirmed_at timestamptz,
  receipt_sent_at timestamptz,
  review_requested_at timestamptz,
  constraint shop_orders_total_positive check (total_cents > 0),
  constraint shop_orders_status_known check (status in ('new', 'confirmed'))
);

create or replace function shop_orders_schedule_confirmation()
returns trigger
language plpgsql
as $$
begin
  perform pgxjob_schedule(
    'confirm_order',
    json_build_object('order_id', new.id, 'total_cents', new.total_cents)
  );
  return new;
end;
$$;

create or replace trigger shop_orders_schedule_confirmation
  after insert on shop_orders
  for each row
  execute function shop_orders_schedule_confirmation();
