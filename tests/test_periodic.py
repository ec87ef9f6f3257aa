"""Periodic jobs across processes and from Python: exactly once per fire time, declared at start."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import migrate
from tests.dbserver import ROOT, scratch_database
from tests.worker_process import JOB_TYPE, WorkerProcess


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_periodic") as conninfo:
        migrate(conninfo)
        yield conninfo


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_three_processes_fire_a_per_second_schedule_once_per_fire_time_through_a_sigkill(
    url: str,
) -> None:
    _log_fires(url)
    options = ("--poll-interval=60", "--worker-dead-without-heartbeat=1")
    with (
        WorkerProcess(url, *options) as first,
        WorkerProcess(url, *options) as second,
        WorkerProcess(url, *options) as third,
    ):
        for process in (first, second, third):
            process.expect("ready", 30)
        query(
            url,
            "select pgxjob_schedule_periodic('tick', '* * * * * *', %s)",
            (JOB_TYPE,),
        )
        began = time.monotonic()
        time.sleep(4)
        second.kill()  # mid-run: whatever it held is rescued, and the others go on firing
        time.sleep(3)
        with WorkerProcess(url, *options) as back:  # and it comes back
            back.expect("ready", 30)
            time.sleep(3)
            elapsed = time.monotonic() - began
            query(url, "select pgxjob_unschedule_periodic('tick')")
            # Every job the schedule made runs: none lost with the killed worker.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _jobs_left(url):
                time.sleep(0.1)
    assert not _jobs_left(url), "jobs of the schedule were left behind"
    fires = query(url, "select fire_time, job_id from fire_log order by fire_time")
    unrun = query(
        url,
        "select f.job_id from fire_log f where not exists (select from"
        " pgxjob_public.pgxjob_job_runs r where r.job_id = f.job_id and r.outcome = 'succeeded')",
    )
    assert unrun == [], f"fired jobs that never succeeded: {unrun}"
    times = [fire_time for fire_time, _ in fires]
    assert len(set(times)) == len(times), "a fire time fired twice"
    assert len({job_id for _, job_id in fires}) == len(fires)
    # One job per second that passed, but for the fire time the schedule was created in and the
    # last, which may fall either side of the test's own clock.
    missed = f"{len(fires)} fires in {elapsed:.1f} s: fire times missed"
    assert len(fires) >= int(elapsed) - 2, missed
    assert len(fires) <= int(elapsed) + 2
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # Fire times are whole seconds apart; a longer gap is a fire time no worker reached in its
    # second (a machine too busy), which the schedule skips rather than fire late in a burst.
    assert all(gap.is_integer() and gap >= 1 for gap in gaps), gaps
    assert sum(gap > 1 for gap in gaps) <= 2, f"fire times missed: {gaps}"


def _log_fires(url: str) -> None:
    """Every fire from now on: its fire time and job, written by the transaction that fired it."""
    query(url, "create table fire_log (fire_time timestamptz not null, job_id bigint not null)")
    query(
        url,
        "create function log_fire() returns trigger language plpgsql as $$"
        " begin insert into public.fire_log values (new.last_fired_at, new.last_job_id);"
        " return new; end $$",
    )
    query(
        url,
        "create trigger log_fire after update on pgxjob_public.pgxjob_periodic_jobs for each row"
        " when (new.last_job_id is distinct from old.last_job_id) execute function log_fire()",
    )


def test_with_every_worker_down_missed_fire_times_make_one_job_when_a_worker_is_back(
    url: str,
) -> None:
    _log_fires(url)
    query(url, "select pgxjob_register_job_type(%s, 'default')", (JOB_TYPE,))
    [(created,)] = query(
        url,
        "select clock_timestamp() from pgxjob_schedule_periodic('tick', '* * * * * *', %s)",
        (JOB_TYPE,),
    )
    time.sleep(4)  # no worker: four fire times pass
    with WorkerProcess(url, "--poll-interval=60") as worker:
        worker.expect("ready", 30)
        [(back,)] = query(url, "select clock_timestamp()")
        time.sleep(2.5)
        query(url, "select pgxjob_unschedule_periodic('tick')")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _jobs_left(url):
            time.sleep(0.1)
    fires = [fire_time for fire_time, _ in query(url, "select * from fire_log order by 1")]
    assert fires, "the schedule never fired"
    # The first fire is the catch-up: one job, for the latest fire time missed, none for the
    # earlier ones; then one per second from there.
    assert fires[0] > created + dt.timedelta(seconds=2), (created, fires)
    assert fires[0] <= back, (back, fires)
    assert len(fires) >= 3, fires
    assert fires[1] >= back - dt.timedelta(seconds=1), (back, fires)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires[1:])]
    assert all(gap.is_integer() and gap >= 1 for gap in gaps), gaps
    assert sum(gap > 1 for gap in gaps) <= 1, f"fire times missed with a worker up: {gaps}"
    assert not _jobs_left(url)


def _jobs_left(url: str) -> int:
    [(left,)] = query(
        url,
        "select (select count(*) from pgxjob_public.pgxjob_asap_jobs)"
        " + (select count(*) from pgxjob_public.pgxjob_run_at_jobs)",
    )
    return int(left)


def test_a_scheduler_declares_its_periodic_jobs_and_a_worker_runs_them(url: str) -> None:
    ran: list[str | None] = []
    scheduler = pgxjob.Scheduler(
        url,
        job_types=[pgxjob.JobTypeConfig("report", lambda job: ran.append(job.params))],
        periodic_jobs=[
            pgxjob.PeriodicJob("nightly_report", "@daily", "report", {"kind": "nightly"}),
            pgxjob.PeriodicJob("every_second", "* * * * * *", "report", {"kind": "tick"}),
            pgxjob.PeriodicJob("broken", "61 * * * *", "report"),
        ],
        handle_error=lambda err: ran.append(f"error: {err}"),
    )
    try:
        scheduler.wait_ready(10)
        scheduler.start_worker(poll_interval=60)
        deadline = time.monotonic() + 10
        while not any(r == '{"kind":"tick"}' for r in ran) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.close(5)
    assert '{"kind":"tick"}' in ran
    assert any(isinstance(r, str) and r.startswith("error: pgxjob") and "61" in r for r in ran)
    names = [row[0] for row in query(url, "select name from pgxjob_periodic_job_status()")]
    assert names == ["every_second", "nightly_report"]


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pgxjob", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_the_cli_lists_and_removes_periodic_jobs(url: str) -> None:
    query(url, "select pgxjob_register_job_type('cli_report')")
    query(
        url,
        "select pgxjob_schedule_periodic('weekly', '@weekly', 'cli_report',"
        " time_zone => 'Europe/Berlin')",
    )
    listed = cli(url, "periodic", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [record] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (record["name"], record["cron"], record["time_zone"]) == (
        "weekly",
        "@weekly",
        "Europe/Berlin",
    )
    assert cli(url, "periodic", "remove", "weekly").returncode == 0
    missing = cli(url, "periodic", "remove", "weekly")
    assert missing.returncode == 1 and "no periodic job named 'weekly'" in missing.stderr
    assert cli(url, "periodic", "remove").returncode == 2
