"""``python -m examples.shop setup | load [--orders N] | report``: the shop's own chores.

The database is chosen as pgxjob's command line chooses it: ``--database-url``, else
``DATABASE_URL``, else the embedded PostgreSQL in ``.pgxjob/pg``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

from pgxjob.embedded import resolve_database

SCHEMA = Path(__file__).with_name("schema.sql")


def setup(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA.read_bytes())


def load(conn: psycopg.Connection, orders: int) -> None:
    setup(conn)
    started = time.monotonic()
    with conn.transaction():
        # One statement; the row trigger schedules one confirm_order job per order.
        conn.execute(
            "insert into shop_orders (customer_email, total_cents)"
            " select format('customer%%s@example.com', n), 500 + (n * 7919) %% 50000"
            " from generate_series(1, %s) as n",
            (orders,),
        )
    elapsed = time.monotonic() - started
    print(
        f"loaded {orders:,} orders in {elapsed:.1f}s; their insert trigger scheduled "
        f"{orders:,} confirm_order jobs"
    )


def report(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "select count(*), count(*) filter (where status = 'confirmed'),"
        " count(receipt_sent_at), count(review_requested_at),"
        " count(*) filter (where status = 'new')"
        " from shop_orders"
    ).fetchone()
    assert row is not None
    total, confirmed, receipts, reviews, unconfirmed = row
    print(
        f"\nshop: {total:,} orders, {confirmed:,} confirmed, {receipts:,} receipts sent, "
        f"{reviews:,} reviews requested, {unconfirmed:,} unconfirmed (payment failed 4 times)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.shop")
    parser.add_argument("--database-url", metavar="URL")
    parser.add_argument("command", choices=["setup", "load", "report"])
    parser.add_argument("--orders", type=int, default=20_000)
    args = parser.parse_args()
    db = resolve_database(args.database_url)
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        if args.command == "setup":
            setup(conn)
            print(f"shop schema installed in {db.describe()}")
        elif args.command == "load":
            load(conn, args.orders)
        else:
            report(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
