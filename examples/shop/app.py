"""The shop's jobs: confirm an order, email its receipt, and ask for a review later.

Run the workers with the pgxjob command line, which sets DATABASE_URL before importing this
module::

    pgxjob worker examples.shop.app:scheduler --group default --group emails

The payment gateway and the mail server are simulated: they fail now and then, so that retries
with linear backoff, explicit retries and final failures all show up in ``pgxjob status``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from psycopg_pool import ConnectionPool

import pgxjob

# A real shop asks for a review after days; the demo waits seconds so that it finishes.
REVIEW_DELAY = timedelta(seconds=float(os.environ.get("SHOP_REVIEW_DELAY_SECONDS", "2")))


@dataclass(frozen=True)
class OrderPlaced:
    """Params of confirm_order, as the insert trigger writes them."""

    order_id: int
    total_cents: int


@dataclass(frozen=True)
class OrderEmail:
    """Params of send_receipt and request_review."""

    order_id: int
    email: str


class PaymentGatewayError(Exception):
    """The (simulated) payment gateway timed out: worth retrying."""


class MailboxUnavailableError(Exception):
    """The (simulated) mail server refused the address: retrying will not help."""


def retry_with_backoff(
    max_retries: int, base_delay: timedelta
) -> Callable[[pgxjob.RunJob], pgxjob.RunJob]:
    """Retry failures at now + (error_count + 1) * base_delay, max_retries times."""
    backoff = pgxjob.RetryLinearBackoffErrorFilter(max_retries=max_retries, base_delay=base_delay)
    return lambda run_job: pgxjob.filter_error(run_job, backoff)


def simulated_outcome(job: pgxjob.Job) -> float:
    """A number in [0, 1) fixed per attempt, so a rerun of the demo fails the same attempts."""
    return random.Random(f"{job.id}:{job.error_count}").random()


@pgxjob.job_type("confirm_order")
@retry_with_backoff(max_retries=3, base_delay=timedelta(milliseconds=500))
@pgxjob.unmarshal_params
def confirm_order(job: pgxjob.Job, order: OrderPlaced) -> None:
    """Charge the order, mark it confirmed, and schedule its emails in the same transaction."""
    if simulated_outcome(job) < 0.08:
        raise PaymentGatewayError(f"payment gateway timed out for order {order.order_id}")
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "update shop_orders set status = 'confirmed', confirmed_at = now()"
            " where id = %s and status = 'new' returning customer_email",
            (order.order_id,),
        ).fetchone()
        if row is None:
            return  # already confirmed: a job can run twice after a crash, so stay idempotent
        email = OrderEmail(order.order_id, row[0])
        # Scheduled on our connection: the jobs exist only if the confirmation commits.
        scheduler.schedule(conn, "send_receipt", asdict(email))
        scheduler.schedule(
            conn, "request_review", asdict(email), run_at=datetime.now(UTC) + REVIEW_DELAY
        )


@pgxjob.job_type("send_receipt", default_group_name="emails")
@pgxjob.unmarshal_params
def send_receipt(job: pgxjob.Job, email: OrderEmail) -> None:
    """Email the receipt; when the mail server asks us to slow down, try again in a second."""
    outcome = simulated_outcome(job)
    if outcome < 0.0005:
        raise MailboxUnavailableError(f"mailbox {email.email} does not exist")
    if outcome < 0.03 and job.error_count < 5:
        raise pgxjob.ErrorWithRetry(
            Exception("mail server rate limit"), datetime.now(UTC) + timedelta(seconds=1)
        )
    with pool.connection() as conn:
        conn.execute(
            "update shop_orders set receipt_sent_at = now() where id = %s", (email.order_id,)
        )


@pgxjob.job_type("request_review", default_group_name="emails")
@pgxjob.unmarshal_params
def request_review(job: pgxjob.Job, email: OrderEmail) -> None:
    """The timed follow-up: ask the customer for a review, REVIEW_DELAY after confirmation."""
    time.sleep(0.001)  # the mail server's round trip
    with pool.connection() as conn:
        conn.execute(
            "update shop_orders set review_requested_at = now() where id = %s",
            (email.order_id,),
        )


# `pgxjob worker` sets DATABASE_URL to the database it uses before it imports this module.
pool = ConnectionPool(os.environ["DATABASE_URL"], min_size=2, max_size=40, open=True, name="shop")
scheduler = pgxjob.Scheduler(
    pool,
    job_groups=["emails"],
    job_types=[confirm_order, send_receipt, request_review],
)
