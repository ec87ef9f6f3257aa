"""The wheel ships the migrations and can migrate a database from a clean virtualenv."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import psycopg

from pgxjob.migrations import load_migrations
from tests.dbserver import ROOT

MIGRATE = """
import sys
import pgxjob.migrations
from pgxjob.migrations import migrate
print(pgxjob.migrations.__file__)
print(",".join(str(v) for v in migrate(sys.argv[1])))
"""


def build_wheel(out_dir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out_dir.glob("pgxjob-*.whl")
    return wheel


def test_wheel_ships_the_migrations_and_migrates_from_a_clean_venv(
    tmp_path: Path, empty_db_url: str
) -> None:
    wheel = build_wheel(tmp_path / "dist")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pgxjob/sql/0001_initial.sql" in names
    for migration in load_migrations():
        assert f"pgxjob/sql/{migration.version:04d}_{migration.name}.sql" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{wheel}[binary]"],
        check=True,
        capture_output=True,
        text=True,
    )
    # Run outside the repository so that the source checkout cannot be imported instead.
    done = subprocess.run(
        [str(python), "-c", MIGRATE, empty_db_url],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )

    module_path, applied = done.stdout.split()
    assert Path(module_path).is_relative_to(env_dir)
    assert applied == ",".join(str(m.version) for m in load_migrations())
    with psycopg.connect(empty_db_url) as conn:
        versions = conn.execute("select version from pgxjob_schema_migrations").fetchall()
        group = conn.execute("select id from pgxjob_groups where name = 'default'").fetchone()
    assert sorted(v for (v,) in versions) == [m.version for m in load_migrations()]
    assert group == (1,)
