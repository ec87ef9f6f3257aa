"""Runs the pgTAP suite with pg_prove against a freshly migrated scratch database.

Fails when any test fails, when pg_prove finds no test, or when pgTAP cannot be loaded.
With file arguments (``run_pgtap.py tests_sql/pgxjob_schedule.sql ...``) it runs only those.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pgxjob.migrations import migrate  # noqa: E402
from tests.dbserver import admin_conninfo, scratch_database  # noqa: E402

_LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
}


def _libpq_env(conninfo: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LIBPQ_ENV.values()}
    for key, value in conninfo_to_dict(conninfo).items():
        if key in _LIBPQ_ENV and value is not None:
            env[_LIBPQ_ENV[key]] = str(value)
    return env


def _load_pgtap(conninfo: str) -> str | None:
    """Load pgTAP into the scratch database; return why it could not be loaded, or None.

    The server's own extension comes first; a server without it (the embedded PostgreSQL) gets
    the plain install script of this machine's pgTAP package, when there is one.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            conn.execute("create extension if not exists pgtap")
            return None
        except psycopg.Error as exc:
            reason = str(exc).splitlines()[0]
    scripts = sorted(
        Path("/usr/share/postgresql").glob("*/extension/pgtap--[0-9]*.[0-9]*.[0-9]*.sql")
    )
    scripts = [path for path in scripts if "--" not in path.name.removeprefix("pgtap--")]
    if not scripts:
        return (
            f"pgTAP is not available to this server ({reason}) and the machine has no plain "
            "pgtap.sql; install postgresql-15-pgtap (see .ci/run) or set DATABASE_URL"
        )
    # Extension scripts start with a guard that stops psql; the rest is plain SQL.
    script = "\n".join(
        line
        for line in scripts[-1].read_text(encoding="utf-8").splitlines()
        if not line.startswith("\\echo")
    )
    proc = subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        env=_libpq_env(conninfo),
    )
    if proc.returncode != 0:
        return f"pgTAP could not be loaded from {scripts[-1]}: {proc.stderr.strip()[:500]}"
    return None


def main(argv: list[str]) -> int:
    if shutil.which("pg_prove") is None:
        problem = (
            "pg_prove is not installed; install libtap-parser-sourcehandler-pgtap-perl and "
            "postgresql-15-pgtap (see .ci/run)"
        )
        if not os.environ.get("CI"):
            # A developer's machine without pgTAP still runs the Python suite; CI never skips.
            print(f"run_pgtap: SKIPPED the pgTAP suite: {problem}", file=sys.stderr)
            return 0
        print(f"run_pgtap: {problem}", file=sys.stderr)
        return 1
    files = [Path(arg).resolve() for arg in argv] or sorted(HERE.glob("*.sql"))
    if not files:
        print("run_pgtap: no *.sql test files in tests_sql/", file=sys.stderr)
        return 1
    print(f"run_pgtap: PostgreSQL from {admin_conninfo()[1]}", flush=True)
    with scratch_database("pgxjob_pgtap") as conninfo:
        migrate(conninfo)
        problem = _load_pgtap(conninfo)
        if problem is not None:
            if admin_conninfo()[1] != "DATABASE_URL" and not os.environ.get("CI"):
                # Only off CI, on a server we started ourselves: say so plainly and go on.
                print(f"run_pgtap: SKIPPED the pgTAP suite: {problem}", file=sys.stderr)
                return 0
            print(f"run_pgtap: {problem}", file=sys.stderr)
            return 1
        # pg_prove's -d takes only a bare database name (a conninfo string turns into a Perl
        # "HASH(...)"), so the connection goes to psql through the libpq environment.
        targets = [str(f) for f in files] if argv else ["-r", str(HERE)]
        proc = subprocess.run(
            ["pg_prove", "--ext", ".sql", *targets],
            capture_output=True,
            text=True,
            env=_libpq_env(conninfo),
        )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        return proc.returncode
    # pg_prove exits 0 with "Result: NOTESTS" when it ran nothing: that is a failure here.
    if "Result: PASS" not in proc.stdout or not re.search(r"Tests=[1-9]", proc.stdout):
        print("run_pgtap: pg_prove ran no tests", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
