"""psycopg2 and other drivers: the SQL recipe the README documents, in the caller's transaction."""

from __future__ import annotations

import psycopg
import pytest

psycopg2 = pytest.importorskip("psycopg2")


def test_the_psycopg2_recipe_schedules_in_the_callers_transaction(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("select pgxjob_register_job_type('recipe_email', 'default')")
    legacy = psycopg2.connect(clean_db)
    try:
        with legacy, legacy.cursor() as cur:  # commits at the end of the block
            cur.execute(
                "select pgxjob_schedule(job_type => %s, params => %s::json, run_at => %s,"
                " priority => %s, unique_key => %s)",
                ("recipe_email", '{"to": "ada@example.com"}', None, 5, "email:ada"),
            )
            kept = cur.fetchone()[0]
        with pytest.raises(psycopg2.Error, match="no_such_type"), legacy, legacy.cursor() as cur:
            cur.execute("select pgxjob_schedule('recipe_email', '{\"to\": \"bob\"}'::json)")
            cur.execute("select pgxjob_schedule('no_such_type')")
        with legacy, legacy.cursor() as cur:
            cur.execute("select pgxjob_schedule('recipe_email', null)")
            legacy.rollback()
    finally:
        legacy.close()
    with psycopg.connect(clean_db, autocommit=True) as conn:
        rows = conn.execute(
            "select id, params::text, priority from pgxjob_asap_jobs order by id"
        ).fetchall()
    assert rows == [(kept, '{"to": "ada@example.com"}', 5)]
