"""A worker process for the fault tests: a Scheduler and workers on a conninfo, in a subprocess.

Run as ``python -m tests.worker_process CONNINFO [options]``. It prints ``ready <worker ids>``
once every worker is registered, ``started <job id>`` as each job starts when ``--mode block``,
and ``done <count>`` on exit. SIGTERM shuts it down cleanly; with ``--mode record`` it then copies
the id of every job it ran (one row per run, duplicates kept) into the ``fault_runs`` table.

The test side is :class:`WorkerProcess`, which starts the script and reads its output with
timeouts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

JOB_TYPE = "fault_job"
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("conninfo")
    parser.add_argument("--mode", choices=("record", "block"), default="record")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--group", default="default")
    parser.add_argument("--max-concurrent-jobs", type=int, default=10)
    parser.add_argument("--max-prefetched-jobs", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--min-heartbeat-delay", type=float, default=0.05)
    parser.add_argument("--heartbeat-delay-jitter", type=float, default=0.05)
    parser.add_argument("--worker-dead-without-heartbeat", type=float, default=0.5)
    parser.add_argument("--max-buffered-job-result-age", type=float, default=0.05)
    args = parser.parse_args(argv)

    import psycopg

    import pgxjob

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
        with ran_lock:
            ran.append(job.id)

    def handle_error(err: BaseException) -> None:
        sys.stderr.write(f"handle_error: {err!r}\n")

    scheduler = pgxjob.Scheduler(
        args.conninfo,
        job_groups=[args.group],
        job_types=[pgxjob.JobTypeConfig(JOB_TYPE, run_job, default_group_name=args.group)],
        handle_error=handle_error,
    )
    workers = [
        scheduler.start_worker(
            group_name=args.group,
            max_concurrent_jobs=args.max_concurrent_jobs,
            max_prefetched_jobs=args.max_prefetched_jobs,
            poll_interval=args.poll_interval,
            max_buffered_job_result_age=args.max_buffered_job_result_age,
            min_heartbeat_delay=args.min_heartbeat_delay,
            heartbeat_delay_jitter=args.heartbeat_delay_jitter,
            worker_dead_without_heartbeat=args.worker_dead_without_heartbeat,
        )
        for _ in range(args.workers)
    ]
    deadline = time.monotonic() + 20
    for worker in workers:
        if not worker.startup_complete.wait(max(deadline - time.monotonic(), 0)):
            say("error workers did not start")
            return 1
    say("ready " + " ".join(str(worker.id) for worker in workers))
    while not stop.wait(0.1):
        pass
    clean = scheduler.close(timeout=20)
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


class WorkerProcess:
    """Runs this script in a subprocess and reads its output lines with timeouts."""

    def __init__(self, conninfo: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_process", conninfo, *args],
            cwd=ROOT,
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
