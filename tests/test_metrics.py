"""Prometheus metrics: `pgxjob worker --metrics-port` and the dashboard's /metrics, scraped while
jobs run and compared with the database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from pgxjob import metrics
from pgxjob.dashboard import create_app
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database

# Quick jobs succeed, failing jobs fail for good, blocking jobs wait for a file to appear.
APP = """
import os, time
from pathlib import Path
import pgxjob

GATE = Path(os.environ["METRICS_TEST_GATE"])

def quick(job):
    return {"ok": job.id}

def failing(job):
    raise RuntimeError("boom")

def blocking(job):
    (GATE.parent / f"started-{job.id}").touch()
    while not GATE.exists():
        time.sleep(0.02)

scheduler = pgxjob.Scheduler(
    os.environ["DATABASE_URL"],
    job_groups=["metrics_g"],
    job_types=[
        pgxjob.JobTypeConfig("m_quick", quick, default_group_name="metrics_g"),
        pgxjob.JobTypeConfig("m_failing", failing, default_group_name="metrics_g"),
        pgxjob.JobTypeConfig("m_blocking", blocking, default_group_name="metrics_g"),
    ],
)
"""


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_metrics") as conninfo:
        migrate(conninfo)
        yield conninfo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return samples(response.read().decode())


def test_worker_and_dashboard_metrics_agree_with_the_database(url: str, tmp_path: Path) -> None:
    (tmp_path / "metrics_app.py").write_text(textwrap.dedent(APP))
    gate = tmp_path / "gate"
    port = free_port()
    env = {**os.environ, "METRICS_TEST_GATE": str(gate), "PYTHONPATH": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgxjob",
            "--database-url",
            url,
            "worker",
            "metrics_app:scheduler",
            "--group",
            "metrics_g",
            "--concurrency",
            "3",
            "--prefetch",
            "5",
            "--poll-interval",
            "60",
            "--metrics-port",
            str(port),
            "--log-level",
            "error",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: worker.poll() is not None or _up(port), 30, "the worker's metrics port")
        assert worker.poll() is None, worker.communicate()[1]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "select pgxjob_schedule_many('m_quick', array_fill('{}'::json, array[30]))"
            )
            conn.execute(
                "select pgxjob_schedule_many('m_failing', array_fill('{}'::json, array[7]))"
            )
            conn.execute(
                "select pgxjob_schedule_many('m_blocking', array_fill('{}'::json, array[10]))"
            )
            conn.execute("select pgxjob_schedule('m_quick', run_at => now() + interval '1 hour')")
        # Quiet: the quick and failing jobs are done, three blocking jobs run, the worker holds
        # some more, and the rest wait.
        wait_for(
            lambda: (
                query(url, "select count(*) from pgxjob_job_runs")[0][0] == 37
                and len(list(tmp_path.glob("started-*"))) == 3
            ),
            30,
            "37 runs logged and 3 blocking jobs running",
        )
        time.sleep(1.5)  # the last results are flushed (max_buffered_result_age 1 s)

        worker_scrape = scrape(port)
        app = create_app(url)
        try:
            db_scrape = samples(TestClient(app).get("/metrics").text)
        finally:
            app.state.dashboard.close()
        owned = query(url, "select count(*) from pgxjob_asap_jobs where worker_id is not null")[0][
            0
        ]
        unowned = query(url, "select count(*) from pgxjob_asap_jobs where worker_id is null")[0][0]
        by_outcome = dict(
            query(
                url,
                "select t.name || ':' || r.outcome, count(*)::float from pgxjob_job_runs r"
                " join pgxjob_job_types t on t.id = r.type_id group by 1",
            )
        )

        g = ("group", "metrics_g")
        assert (
            worker_scrape[
                ("pgxjob_job_runs_total", (g, ("outcome", "succeeded"), ("type", "m_quick")))
            ]
            == by_outcome["m_quick:succeeded"]
            == 30
        )
        assert (
            worker_scrape[
                ("pgxjob_job_runs_total", (g, ("outcome", "failed"), ("type", "m_failing")))
            ]
            == by_outcome["m_failing:failed"]
            == 7
        )
        assert worker_scrape[("pgxjob_job_duration_seconds_count", (g, ("type", "m_quick")))] == 30
        assert worker_scrape[("pgxjob_job_start_delay_seconds_count", (g,))] == 37
        assert worker_scrape[("pgxjob_result_flush_seconds_count", ())] >= 1
        # What the worker holds beyond its three running jobs waits in its prefetch queue.
        assert worker_scrape[("pgxjob_prefetched_jobs", (g,))] == owned - 3
        assert owned + unowned == 10

        assert (
            db_scrape[("pgxjob_jobs", (g, ("state", "running"), ("type", "m_blocking")))] == owned
        )
        assert (
            db_scrape[("pgxjob_jobs", (g, ("state", "waiting"), ("type", "m_blocking")))] == unowned
        )
        assert db_scrape[("pgxjob_jobs", (g, ("state", "scheduled"), ("type", "m_quick")))] == 1
        assert db_scrape[("pgxjob_jobs", (g, ("state", "waiting"), ("type", "m_quick")))] == 0
        assert db_scrape[("pgxjob_workers", (g, ("state", "alive")))] == 1
        oldest = db_scrape[("pgxjob_oldest_waiting_job_age_seconds", (g,))]
        assert (oldest > 0) == (unowned > 0)

        gate.touch()
        wait_for(
            lambda: query(url, "select count(*) from pgxjob_job_runs")[0][0] == 47, 30, "all runs"
        )
        time.sleep(1.5)
        after = scrape(port)
        assert (
            after[("pgxjob_job_runs_total", (g, ("outcome", "succeeded"), ("type", "m_blocking")))]
            == 10
        )
        assert after[("pgxjob_prefetched_jobs", (g,))] == 0
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err


def _up(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def test_without_a_recorder_the_worker_reports_nothing_and_a_failing_one_is_contained() -> None:
    assert metrics.recorder is None

    class Broken:
        def job_finished(self, *args: object) -> None:
            raise RuntimeError("recorder broke")

        def results_flushed(self, seconds: float) -> None:
            raise RuntimeError("recorder broke")

    from pgxjob.results import _report_flush

    metrics.install(Broken())
    try:
        _report_flush(0.1)  # logged, not raised
    finally:
        metrics.uninstall()
    assert metrics.recorder is None


def test_metrics_port_in_use_is_a_clear_error(url: str, tmp_path: Path) -> None:
    (tmp_path / "metrics_app.py").write_text(textwrap.dedent(APP))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "METRICS_TEST_GATE": str(tmp_path / "g"), "PYTHONPATH": str(tmp_path)}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pgxjob",
                "--database-url",
                url,
                "worker",
                "metrics_app:scheduler",
                "--group",
                "metrics_g",
                "--metrics-port",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr
