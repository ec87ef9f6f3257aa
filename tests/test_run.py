"""Scheduler.run: a real process, real signals: it blocks until SIGTERM, shuts down, and when the
shutdown deadline runs out releases every job and unregisters; a signal during startup; the
main-thread rule and the handlers it restores."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgxjob

ROOT = Path(__file__).resolve().parent.parent

# The program an embedder writes: handlers, a Scheduler, and scheduler.run().
APP = """
import sys, threading, time, os, signal
import pgxjob

conninfo, hold, timeout, signal_after = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]

@pgxjob.job_type("run_job")
def run_job(job):
    time.sleep(hold)

scheduler = pgxjob.Scheduler(conninfo, job_types=[run_job], setup_timeout=60)
if signal_after != "none":
    # A real signal, sent while run() is still starting up.
    threading.Timer(float(signal_after), os.kill, (os.getpid(), signal.SIGTERM)).start()
clean = scheduler.run(
    groups=["default"],
    shutdown_timeout=None if timeout == "none" else float(timeout),
    max_concurrent_jobs=2,
    max_prefetched_jobs=50,
    max_buffered_job_result_age=0.05,
)
print("run returned", clean, flush=True)
"""


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    script = tmp_path / "embedded_app.py"
    script.write_text(textwrap.dedent(APP))
    procs: list[subprocess.Popen[str]] = []

    def start_app(
        conninfo: str, *, hold: float, timeout: str = "none", signal_after: str = "none"
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(script), conninfo, str(hold), timeout, signal_after],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start_app
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def query(conninfo: str, sql: str) -> Any:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def schedule(conninfo: str, count: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pgxjob_register_job_type('run_job', 'default')")
        conn.execute(
            "select pgxjob_schedule_many('run_job', array_fill(null::json, array[%s]))", (count,)
        )


def owned(conninfo: str) -> int:
    return int(query(conninfo, "select count(*) from pgxjob_asap_jobs where worker_id is not null"))


def test_run_blocks_until_sigterm_then_shuts_down_cleanly(
    clean_db: str, start: Callable[..., subprocess.Popen[str]]
) -> None:
    schedule(clean_db, 20)
    proc = start(clean_db, hold=0.01)
    wait_for(lambda: query(clean_db, "select count(*) from pgxjob_job_runs") == 20)
    time.sleep(0.5)
    assert proc.poll() is None, "run() blocks while no signal came"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "run returned True" in out
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0


def test_run_releases_every_job_and_unregisters_when_the_shutdown_timeout_runs_out(
    clean_db: str, start: Callable[..., subprocess.Popen[str]]
) -> None:
    schedule(clean_db, 52)
    proc = start(clean_db, hold=60, timeout="1")
    # Two jobs hang in handlers, fifty wait in the prefetch: all owned by the worker.
    wait_for(lambda: owned(clean_db) == 52)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert "run returned False" in out, err
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0
    assert owned(clean_db) == 0
    assert query(clean_db, "select count(*) from pgxjob_asap_jobs") == 52


def test_a_second_signal_releases_every_job_at_once(
    clean_db: str, start: Callable[..., subprocess.Popen[str]]
) -> None:
    schedule(clean_db, 52)
    proc = start(clean_db, hold=60)
    wait_for(lambda: owned(clean_db) == 52)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None, "the first signal waits for running jobs"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert "run returned False" in out, err
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0
    assert owned(clean_db) == 0


def test_a_signal_during_startup_stops_run_at_once(
    empty_db_url: str, start: Callable[..., subprocess.Popen[str]]
) -> None:
    # Not migrated: setup cannot finish, so the worker never registers.
    proc = start(empty_db_url, hold=0, signal_after="1.5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "run returned True" in out


def test_run_outside_the_main_thread_is_refused(clean_db: str) -> None:
    scheduler = pgxjob.Scheduler(clean_db)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            scheduler.run()
        except BaseException as exc:
            errors.append(exc)

    try:
        thread = threading.Thread(target=target)
        thread.start()
        thread.join(10)
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError)
        assert "main thread" in str(errors[0])
        assert scheduler.workers == []
    finally:
        scheduler.close(5)


def test_run_stops_on_its_stop_event_and_restores_the_signal_handlers(clean_db: str) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    scheduler = pgxjob.Scheduler(clean_db)
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    try:
        assert scheduler.run(stop=stop, max_buffered_job_result_age=0.05) is True
    finally:
        timer.cancel()
        scheduler.close(5)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0
