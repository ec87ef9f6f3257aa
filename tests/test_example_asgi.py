"""The Starlette example over real HTTP: uvicorn on a free port, a scratch database, a worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgxjob.migrations import migrate
from tests.dbserver import ROOT, scratch_database

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(base: str, path: str, body: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def served() -> Iterator[tuple[str, str]]:
    with scratch_database("pgxjob_asgi") as url:
        migrate(url)
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "examples.asgi.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(base + "/health", timeout=1):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError("uvicorn did not start") from None
                    time.sleep(0.1)
            yield base, url
        finally:
            server.terminate()
            server.wait(15)


def test_the_endpoint_schedules_in_its_request_transaction_and_the_worker_runs_it(
    served: tuple[str, str],
) -> None:
    base, url = served
    status, created = post(base, "/signups", {"email": "ada@example.com"})
    assert status == 201
    # The duplicate's insert fails after its job was scheduled: both roll back.
    status, refused = post(base, "/signups", {"email": "ada@example.com"})
    assert status == 409 and "signed up already" in refused["error"]
    assert post(base, "/signups", {"email": 3})[0] == 422
    with psycopg.connect(url, autocommit=True) as conn:
        jobs = conn.execute("select id, params::text from pgxjob_asap_jobs").fetchall()
    assert jobs == [(created["job_id"], '{"email":"ada@example.com"}')]

    from examples.asgi.app import make_scheduler

    previous = os.environ.get("DATABASE_URL")
    scheduler = make_scheduler(url)
    try:
        worker = scheduler.start_worker(max_buffered_job_result_age=0.01)
        deadline = time.monotonic() + 20
        with psycopg.connect(url, autocommit=True) as conn:
            while conn.execute("select count(*) from pgxjob_job_runs").fetchone() != (1,):
                assert time.monotonic() < deadline, "the job did not run"
                time.sleep(0.05)
            assert worker.shutdown(10)
            welcomed = conn.execute("select email from signups where welcomed_at is not null")
            assert welcomed.fetchall() == [("ada@example.com",)]
            run = conn.execute("select outcome, output::text from pgxjob_job_runs").fetchone()
        assert run == ("succeeded", '{"sent_to":"ada@example.com"}')
    finally:
        scheduler.close(timeout=5)
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
