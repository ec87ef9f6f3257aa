"""A plain psql install is first class: the same schema as the Python migrator's.

One scratch database is migrated with pgxjob.migrations.migrate, another gets sql/NNNN_*.sql
applied in order with `psql -v ON_ERROR_STOP=1 -f`, from a session with PostgreSQL's default
search_path. Their schema dumps (tests/schema_snapshot.py) must match, grants and the pinned
search_path of every function included, and so must their version tables.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

import pytest

from tests.dbserver import scratch_database
from tests.schema_snapshot import dump_database
from tests.sqlcore import INSTALLERS, run


@pytest.fixture(scope="module")
def installs() -> Iterator[dict[str, str]]:
    with (
        scratch_database("pgxjob_parity_py") as by_migrator,
        scratch_database("pgxjob_parity_psql") as by_psql,
    ):
        INSTALLERS["migrator"](by_migrator)
        INSTALLERS["psql"](by_psql)
        yield {"migrator": by_migrator, "psql": by_psql}


def diff(a: str, b: str) -> str:
    return "".join(
        difflib.unified_diff(
            a.splitlines(keepends=True), b.splitlines(keepends=True), "migrator", "psql", n=1
        )
    )


@pytest.mark.parametrize("privileges", [False, True], ids=["schema", "schema_and_grants"])
def test_psql_install_dumps_the_same_schema_as_the_migrator(
    installs: dict[str, str], privileges: bool
) -> None:
    by_migrator = dump_database(installs["migrator"], privileges=privileges)
    by_psql = dump_database(installs["psql"], privileges=privileges)
    assert by_migrator == by_psql, diff(by_migrator, by_psql)


def test_every_function_pins_the_same_search_path_on_both_installs(
    installs: dict[str, str],
) -> None:
    query = (
        "select p.oid::regprocedure::text, p.prosecdef, p.proconfig from pg_proc p"
        " where p.proname like 'pgxjob\\_%%' order by 1"
    )
    assert run(installs["psql"], query) == run(installs["migrator"], query)


def test_psql_install_records_every_version(installs: dict[str, str]) -> None:
    query = "select version, name from pgxjob_schema_migrations order by version"
    assert run(installs["psql"], query) == run(installs["migrator"], query)
    assert run(installs["psql"], query), "the psql install has an empty version table"


def test_status_works_on_a_psql_install(installs: dict[str, str]) -> None:
    [(status,)] = run(installs["psql"], "select pgxjob_status()")
    [(expected,)] = run(installs["migrator"], "select pgxjob_status()")
    assert status["schema_version"] == expected["schema_version"] is not None
