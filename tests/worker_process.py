"""A worker process for the fault tests: a Scheduler and workers on a conninfo, in a subprocess.

Run as ``python -m tests.worker_process CONNINFO [options]``. It prints ``ready <worker ids>``
once every worker is registered, ``started <job id>`` as each job starts when ``--mode block`` or
``--mode hang``, and ``done <count>`` on exit. SIGTERM shuts it down (``--close-timeout``); the
exit code is 2 when that timed out. Modes:

- ``record``: on exit, copies the id of every job it ran (one row per run, duplicates kept) into
  the ``fault_runs`` table.
- ``block``: each job waits for shutdown, then fails.
- ``hang``: each job hangs for good, ignoring shutdown.
- ``chaos``: each job inserts (job id, pid, run token, database time) into ``chaos_runs``, a table
  without a unique constraint, retrying through outages, so a run that survives a SIGKILL of its
  process is visible; a job whose params hold ``{"retry": n}`` fails with a retry (computed on
  the database clock) while its error_count is below n, before that insert. ``--job-delay``
  makes each job last that many seconds longer.

``--group`` may be repeated: the process then runs ``--workers`` workers for each group.
``--no-listen`` polls only; ``--listen-conninfo`` LISTENs over a direct connection of its own
(both for a conninfo that goes through a pooler in transaction mode).
``--report-clock`` prints ``clock <time.time()>`` before ``ready``.
``--clock-offset SECONDS`` skews this process's wall clock (``time.time`` and
``datetime.datetime.now``) to simulate an application host whose clock is wrong.

The test side is :class:`WorkerProcess`, which starts the script and reads its output with
timeouts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

JOB_TYPE = "fault_job"
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("conninfo")
    parser.add_argument("--mode", choices=("record", "block", "hang", "chaos"), default="record")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--group", action="append", dest="groups")
    parser.add_argument("--max-concurrent-jobs", type=int, default=10)
    parser.add_argument("--max-prefetched-jobs", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--min-heartbeat-delay", type=float, default=0.05)
    parser.add_argument("--heartbeat-delay-jitter", type=float, default=0.05)
    parser.add_argument("--worker-dead-without-heartbeat", type=float, default=0.5)
    parser.add_argument("--max-buffered-job-result-age", type=float, default=0.05)
    parser.add_argument("--max-buffered-job-results", type=int, default=100)
    parser.add_argument("--close-timeout", type=float, default=20.0)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--report-clock", action="store_true")
    parser.add_argument("--job-delay", type=float, default=0.0)
    parser.add_argument("--no-listen", dest="listen", action="store_false")
    parser.add_argument("--listen-conninfo", default=None)
    args = parser.parse_args(argv)
    groups: list[str] = args.groups or ["default"]

    import psycopg
    from psycopg_pool import ConnectionPool

    import pgxjob

    if args.clock_offset:
        _skew_clock(args.clock_offset)
    # chaos mode: the handlers' side effect goes through a small pool of its own.
    side_pool = (
        ConnectionPool(
            args.conninfo,
            min_size=1,
            max_size=2,
            timeout=2.0,
            # The conninfo may be a pooler's in transaction mode: no prepared statements.
            kwargs={"autocommit": True, "prepare_threshold": None},
        )
        if args.mode == "chaos"
        else None
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    ran: list[int] = []
    ran_lock = threading.Lock()

    def run_job(job: pgxjob.Job) -> None:
        if args.mode == "block":
            say(f"started {job.id}")
            # Mid-job until the process is killed; a clean shutdown fails the job instead.
            job.shutdown_requested.wait(120)
            raise RuntimeError("interrupted by shutdown")
        if args.mode == "hang":
            say(f"started {job.id}")
            threading.Event().wait()  # never returns, whatever shutdown asks
        if args.mode == "chaos":
            retries = json.loads(job.params).get("retry", 0) if job.params else 0
            if job.error_count < retries:
                raise pgxjob.ErrorWithRetry(
                    "planned failure",
                    backoff_max_retries=retries,
                    backoff_base_delay=dt.timedelta(milliseconds=10),
                )
            assert side_pool is not None
            record_side_effect(side_pool, job.id)
            if args.job_delay:
                time.sleep(args.job_delay)
        with ran_lock:
            ran.append(job.id)

    def record_side_effect(pool: ConnectionPool, job_id: int) -> None:
        # One token per handler run: an insert retried after a lost acknowledgement repeats
        # the token, so the test counts runs of the handler, not rows.
        token = uuid.uuid4()
        delay = 0.02
        while True:
            try:
                with pool.connection() as conn:
                    conn.execute(
                        "insert into chaos_runs (job_id, pid, token, ran_at)"
                        " values (%s, %s, %s, clock_timestamp())",
                        (job_id, os.getpid(), token),
                    )
                return
            except psycopg.Error:
                # Outages are what the chaos tests make: wait and try again, as an
                # idempotent handler with its own retries would.
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def handle_error(err: BaseException) -> None:
        # The thread says which loop reported it: fetch, flush, heartbeat or listener.
        sys.stderr.write(f"handle_error [{threading.current_thread().name}]: {err!r}\n")

    scheduler = pgxjob.Scheduler(
        args.conninfo,
        job_groups=groups,
        job_types=[pgxjob.JobTypeConfig(JOB_TYPE, run_job, default_group_name=groups[0])],
        handle_error=handle_error,
        listen_conninfo=args.listen_conninfo,
    )
    workers = [
        scheduler.start_worker(
            group_name=group,
            max_concurrent_jobs=args.max_concurrent_jobs,
            max_prefetched_jobs=args.max_prefetched_jobs,
            poll_interval=args.poll_interval,
            max_buffered_job_results=args.max_buffered_job_results,
            max_buffered_job_result_age=args.max_buffered_job_result_age,
            min_heartbeat_delay=args.min_heartbeat_delay,
            heartbeat_delay_jitter=args.heartbeat_delay_jitter,
            worker_dead_without_heartbeat=args.worker_dead_without_heartbeat,
            listen=args.listen,
        )
        for group in groups
        for _ in range(args.workers)
    ]
    deadline = time.monotonic() + 20
    for worker in workers:
        if not worker.startup_complete.wait(max(deadline - time.monotonic(), 0)):
            say("error workers did not start")
            return 1
    if args.clock_offset or args.report_clock:
        say(f"clock {time.time()}")
    say("ready " + " ".join(str(worker.id) for worker in workers))
    while not stop.wait(0.1):
        pass
    clean = scheduler.close(timeout=args.close_timeout)
    if side_pool is not None:
        side_pool.close()
    if args.mode == "record":
        with (
            psycopg.connect(args.conninfo, autocommit=True) as conn,
            conn.cursor() as cur,
            cur.copy("copy fault_runs (job_id, pid) from stdin") as copy,
        ):
            for job_id in ran:
                copy.write_row((job_id, os.getpid()))
    say(f"done {len(ran)}")
    return 0 if clean else 2


def _skew_clock(offset: float) -> None:
    """Move this process's wall clock by offset seconds, as a badly set host clock would."""
    real_time = time.time
    real_datetime = dt.datetime
    delta = dt.timedelta(seconds=offset)

    class SkewedDatetime(real_datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return real_datetime.now(tz) + delta

        @classmethod
        def utcnow(cls) -> dt.datetime:  # type: ignore[override]
            return real_datetime.now(dt.UTC).replace(tzinfo=None) + delta

    time.time = lambda: real_time() + offset
    # Modules that did `import datetime` look the class up at each call and see the skew;
    # psycopg imported the class itself earlier and keeps converting real datetimes.
    dt.datetime = SkewedDatetime  # type: ignore[misc]


class WorkerProcess:
    """Runs this script in a subprocess and reads its output lines with timeouts."""

    def __init__(
        self,
        conninfo: str,
        *args: str,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        # prefix runs the script under another command: `ip netns exec NAME` puts it on another
        # network "host", `faketime` gives it another clock.
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tests.worker_process", conninfo, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float) -> list[str]:
        """Wait for the next output line starting with prefix; return its other words."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"worker process {self.pid} printed no {prefix!r} line within {timeout}s "
                    f"(exit code {self.proc.poll()}); stderr tail: {self.stderr[-10:]}"
                ) from None
            words = line.split()
            if words and words[0] == prefix:
                return words[1:]
            if words and words[0] == "error":
                raise AssertionError(f"worker process {self.pid}: {line}; {self.stderr[-10:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: a clean shutdown. Return the number of jobs it reports having run."""
        self.proc.send_signal(signal.SIGTERM)
        (count,) = self.expect("done", timeout)
        self.proc.wait(timeout)
        return int(count)

    def kill(self) -> None:
        """SIGKILL and reap, idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


if __name__ == "__main__":
    sys.exit(main())
