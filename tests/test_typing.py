"""The typed shortcut is checked by mypy: a job type over unmarshal_params schedules its params
type and nothing else; one over a plain handler takes any params."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

SOURCE = textwrap.dedent(
    """
    import dataclasses

    import psycopg

    import pgxjob


    @dataclasses.dataclass
    class Greeting:
        name: str


    @pgxjob.job_type("greet")
    @pgxjob.unmarshal_params
    async def greet(job: pgxjob.Job, params: Greeting) -> None: ...


    @pgxjob.job_type("plain")
    def plain(job: pgxjob.Job) -> None: ...


    async def use(conn: psycopg.AsyncConnection[object]) -> None:
        greet.schedule(None, Greeting("Ada"))
        await greet.schedule_async(conn, Greeting("Ada"), priority=1)
        plain.schedule(None, {"anything": 1})
        reveal_type(greet)
        greet.schedule(None, {"name": "Ada"})  # the wrong params type
    """
)


def test_mypy_checks_scheduled_params_against_the_declared_params_type(tmp_path: Path) -> None:
    path = tmp_path / "use_pgxjob.py"
    path.write_text(SOURCE)
    stdout, stderr, status = mypy_api.run(
        [
            str(path),
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--follow-imports",
            "silent",
        ]
    )
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert status == 1, stdout + stderr
    assert any(
        'Revealed type is "pgxjob.jobs.JobTypeConfig[use_pgxjob.Greeting]"' in line
        for line in lines
    ), stdout
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1, stdout
    wrong = 1 + SOURCE.splitlines().index(
        '    greet.schedule(None, {"name": "Ada"})  # the wrong params type'
    )
    assert f":{wrong}:" in errors[0] and "Greeting" in errors[0], errors[0]
