"""Many worker hosts: network namespaces on a bridge, one private PostgreSQL at the bridge address.

Each "host" is a network namespace (``ip netns``) joined to a bridge of this machine by a veth
pair; worker processes run inside it (``ip netns exec``). PostgreSQL is a private PostgreSQL 15
cluster of the test's own (initdb/pg_ctl as the postgres user, in a temporary directory) that
listens only on the bridge's address, so the hosts reach it over their links; the shared server
is never touched. Taking a host's link down (``ip link set ... down`` on the bridge side of its
veth) cuts it off the way a failed switch port does: its packets are dropped, its connections
hang, its processes go on.

Scenarios, with their figures written to CHAOS_REPORT (docs/reliability.md quotes them):

1. three hosts drain a backlog (with retries) exactly once;
2. one host's link goes down for longer than the dead-after time while its handlers run: the
   other hosts reap it and run its jobs, and when the link comes back its late results are
   fenced (stale: no job changes twice, the rescuers' results stand, the stale runs show in the
   run log until the rescuing run's row replaces them, and the host says which results were
   stale);
3. a host whose clock is minutes off (libfaketime, LD_PRELOAD, as the ``faketime`` command
   does) starts a timed job on the database's time.

Runs in ``make chaos`` only (``CHAOS_HOSTS=1``): it needs root, ``ip`` and the PostgreSQL 15
server binaries, and libfaketime for the third scenario; without them each test is skipped with
the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.test_chaos import (
    GROUPS,
    PG_BIN,
    check_outcome,
    free_port,
    pending_ids,
    prepare,
    schedule_jobs,
)
from tests.test_faults import query, scalar, wait_for
from tests.worker_process import JOB_TYPE, WorkerProcess

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
HOSTS = 3
REPORT: dict[str, Any] = {}


def _why_not() -> str | None:
    if os.environ.get("CHAOS_HOSTS", "") in ("", "0"):
        return "many-host scenarios run in `make chaos` (CHAOS_HOSTS=1)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 server binaries missing in {PG_BIN}"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


@pytest.fixture(scope="module", autouse=True)
def report_figures() -> Iterator[None]:
    yield
    path = os.environ.get("CHAOS_REPORT")
    text = json.dumps(REPORT, indent=2, sort_keys=True)
    print(f"\nmany-host figures:\n{text}")
    if path:
        # Beside the other chaos figures: the report file gains a "hosts" entry.
        target = Path(path)
        data = json.loads(target.read_text()) if target.exists() else {}
        data["hosts"] = REPORT
        target.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


class Network:
    """A bridge with an address, and HOSTS namespaces each on a veth pair to it."""

    def __init__(self) -> None:
        token = secrets.token_hex(2)
        self.bridge = f"pjbr{token}"
        subnet = random.Random(token).randrange(16, 250)
        self.prefix = f"10.231.{subnet}"
        self.address = f"{self.prefix}.1"
        self.hosts = [f"pgxjob-{token}-h{n}" for n in range(HOSTS)]
        self.links = [f"pjv{token}h{n}" for n in range(HOSTS)]
        self.made: list[tuple[str, ...]] = []

    def up(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.made.append(("ip", "link", "del", self.bridge))
        sh("ip", "addr", "add", f"{self.address}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for n, (host, link) in enumerate(zip(self.hosts, self.links, strict=True)):
            sh("ip", "netns", "add", host)
            self.made.append(("ip", "netns", "del", host))
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", host)
            self.made.append(("ip", "link", "del", link))
            sh("ip", "link", "set", link, "master", self.bridge)
            sh("ip", "link", "set", link, "up")
            inside = ("ip", "netns", "exec", host)
            sh(*inside, "ip", "addr", "add", f"{self.prefix}.{10 + n}/24", "dev", "eth0")
            sh(*inside, "ip", "link", "set", "eth0", "up")
            sh(*inside, "ip", "link", "set", "lo", "up")

    def down(self) -> None:
        for command in reversed(self.made):
            with contextlib.suppress(subprocess.SubprocessError):
                sh(*command)

    def prefix_for(self, host: int) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.hosts[host])

    def cut(self, host: int) -> None:
        sh("ip", "link", "set", self.links[host], "down")

    def mend(self, host: int) -> None:
        sh("ip", "link", "set", self.links[host], "up")


class BridgeCluster:
    """A private PostgreSQL 15 cluster listening only on the bridge's address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.root = Path(tempfile.mkdtemp(prefix="pgxjob-hosts-"))
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")

    def run(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.address.rsplit('.', 1)[0]}.0/24 trust\n")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.address} -c fsync=off"
            " -c max_connections=200"
        )
        self.run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.address} port={self.port} user=postgres dbname={dbname}"

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = f"hosts_{secrets.token_hex(4)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f"create database {name}")
            conn.execute(f'alter database {name} set search_path = "$user", public, pgxjob_public')
        url = self.conninfo(name)
        prepare(url)
        yield url


@pytest.fixture(scope="module")
def net() -> Iterator[tuple[Network, BridgeCluster]]:
    network = Network()
    cluster: BridgeCluster | None = None
    try:
        network.up()
        cluster = BridgeCluster(network.address)
        cluster.start()
        yield network, cluster
    finally:
        if cluster is not None:
            cluster.stop()
        network.down()


def host_options(
    *,
    dead_after: float,
    job_delay: float = 0.0,
    groups: tuple[str, ...] = GROUPS[:1],
    extra: tuple[str, ...] = (),
) -> list[str]:
    options = [
        "--mode=chaos",
        *(f"--group={group}" for group in groups),
        "--max-concurrent-jobs=8",
        "--max-prefetched-jobs=8",
        "--max-buffered-job-results=50",
        "--max-buffered-job-result-age=0.05",
        "--poll-interval=0.5",
        "--min-heartbeat-delay=0.1",
        "--heartbeat-delay-jitter=0.1",
        f"--worker-dead-without-heartbeat={dead_after}",
        "--close-timeout=30",
        *extra,
    ]
    if job_delay:
        options.append(f"--job-delay={job_delay}")
    return options


@contextlib.contextmanager
def on_host(
    network: Network, host: int, url: str, options: list[str], env: dict[str, str] | None = None
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(url, *options, prefix=network.prefix_for(host), env=env)
    try:
        yield process
    finally:
        process.kill()


def test_the_database_is_reachable_from_each_host_only_over_its_link(
    net: tuple[Network, BridgeCluster],
) -> None:
    network, cluster = net
    probe = (
        "python3",
        "-c",
        "import socket,sys; socket.create_connection((sys.argv[1], "
        "int(sys.argv[2])), timeout=2).close()",
        cluster.address,
        str(cluster.port),
    )
    for host in range(HOSTS):
        subprocess.run([*network.prefix_for(host), *probe], check=True, timeout=10)
    network.cut(0)
    try:
        cut = subprocess.run([*network.prefix_for(0), *probe], check=False, timeout=10)
        assert cut.returncode != 0, "a host whose link is down still reached the database"
    finally:
        network.mend(0)
    # Only at the bridge address: not on the loopback of a host.
    lo = subprocess.run(
        [*network.prefix_for(1), *probe[:-2], "127.0.0.1", str(cluster.port)],
        check=False,
        timeout=10,
    )
    assert lo.returncode != 0


def test_three_hosts_drain_every_job_exactly_once(net: tuple[Network, BridgeCluster]) -> None:
    network, cluster = net
    began = time.monotonic()
    with cluster.database() as url, contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(
                on_host(network, h, url, host_options(dead_after=10, groups=GROUPS))
            )
            for h in range(HOSTS)
        ]
        for process in processes:
            process.expect("ready", 30)
        planned = schedule_jobs(url, 3000, random.Random(31))
        wait_for(lambda: not pending_ids(url), 120, "every job")
        counts = [process.stop(timeout=60) for process in processes]
        assert [p.proc.returncode for p in processes] == [0] * HOSTS
        outcome = check_outcome(url, planned)
        per_pid = dict(query(url, "select pid, count(*) from chaos_runs group by 1"))
    assert (outcome.lost, outcome.pending, outcome.handler_reruns) == (0, 0, 0)
    assert all(count > 0 for count in counts), counts
    REPORT["drain"] = {
        "hosts": HOSTS,
        "jobs": outcome.scheduled,
        "succeeded": outcome.succeeded,
        "jobs_lost": outcome.lost,
        "handler_reruns": outcome.handler_reruns,
        "runs_per_host": sorted(int(n) for n in per_pid.values()),
        "seconds": round(time.monotonic() - began, 1),
    }


def test_a_host_cut_off_past_dead_after_has_its_jobs_rescued_and_its_late_results_fenced(
    net: tuple[Network, BridgeCluster],
) -> None:
    network, cluster = net
    dead_after = 2.0
    jobs = 8
    with cluster.database() as url, contextlib.ExitStack() as stack:
        # Host 0 alone takes the jobs; its handlers run 8 s each, long enough for the other
        # hosts to start and for the cut to land while they run.
        cut_off = stack.enter_context(
            on_host(network, 0, url, host_options(dead_after=dead_after, job_delay=8))
        )
        (cut_id,) = (int(w) for w in cut_off.expect("ready", 30))
        job_ids = sorted(
            int(j)
            for (j,) in query(
                url,
                "select pgxjob_schedule_many(%s, %s::json[], %s)",
                (JOB_TYPE, [None] * jobs, GROUPS[0]),
            )
        )
        planned = dict.fromkeys(job_ids, 0)
        # chaos mode inserts its side-effect row before its delay: all handlers are running.
        wait_for(lambda: scalar(url, "select count(*) from chaos_runs") == jobs, 10, "handlers")
        started_at = time.monotonic()
        # The rescuers' handlers last longer, so that the late results land while they run.
        rescuers = [
            stack.enter_context(
                on_host(network, h, url, host_options(dead_after=dead_after, job_delay=12))
            )
            for h in (1, 2)
        ]
        for process in rescuers:
            process.expect("ready", 30)
        network.cut(0)
        cut_at = time.monotonic()
        assert cut_at - started_at < 6, "the hosts took too long to start: the handlers ended"
        wait_for(
            lambda: cut_id not in {w for (w,) in query(url, "select id from pgxjob_workers")},
            15,
            "the cut-off host to be reaped",
        )
        reaped_after = time.monotonic() - cut_at
        wait_for(
            lambda: (
                scalar(
                    url,
                    "select count(distinct job_id) from chaos_runs where pid <> %s",
                    (cut_off.pid,),
                )
                == jobs
            ),
            15,
            "the other hosts to start every job",
        )
        # Down for twice the dead-after time, then back while the rescuing handlers still run.
        time.sleep(max(0.0, 2 * dead_after - (time.monotonic() - cut_at)))
        network.mend(0)
        down_for = time.monotonic() - cut_at
        stale_seen: set[int] = set()

        def late_results_fenced() -> bool:
            rows = query(url, "select job_id from pgxjob_job_runs where outcome = 'stale'")
            stale_seen.update(int(j) for (j,) in rows)
            return any("results were stale" in line for line in cut_off.stderr)

        wait_for(late_results_fenced, 30, "the cut-off host's late results")
        wait_for(lambda: not pending_ids(url), 30, "the rescued jobs to finish")
        for process in [cut_off, *rescuers]:
            process.stop(timeout=60)
        outcome = check_outcome(url, planned)
        runs = query(
            url,
            "select job_id, run_number, outcome from pgxjob_job_runs order by job_id, run_number",
        )
        handler_pids = query(url, "select job_id, pid from chaos_runs order by job_id, ran_at")
        workers_left = scalar(url, "select count(*) from pgxjob_workers")

    reported_stale = {
        int(job_id)
        for line in cut_off.stderr
        if "results were stale" in line
        for listed in re.findall(r"jobs \[([\d, ]+)\]", line)
        for job_id in listed.split(", ")
    }
    # Every job: exactly one result applied (the rescuer's success), none lost.
    assert (outcome.lost, outcome.pending) == (0, 0)
    assert runs == [(job_id, 1, "succeeded") for job_id in job_ids]
    # Each handler ran twice: once on the cut-off host, once on a rescuer, in that order.
    by_job: dict[int, list[int]] = {}
    for job_id, pid in handler_pids:
        by_job.setdefault(int(job_id), []).append(int(pid))
    assert all(
        pids[0] == cut_off.pid and pids[1] != cut_off.pid and len(pids) == 2
        for pids in by_job.values()
    ), by_job
    # The cut-off host's results came back stale, every one of them, and changed nothing.
    assert reported_stale == set(job_ids)
    assert any("was reaped while alive" in line for line in cut_off.stderr)
    assert workers_left == 0
    REPORT["partition"] = {
        "jobs": jobs,
        "dead_after_seconds": dead_after,
        "link_down_seconds": round(down_for, 1),
        "reaped_after_seconds": round(reaped_after, 1),
        "late_results_fenced": len(reported_stale),
        "stale_runs_seen_in_run_log": len(stale_seen),
        "results_applied_twice": sum(1 for r in runs if r[2] == "succeeded") - jobs,
        "handler_runs_per_job": 2,
        "jobs_lost": outcome.lost,
    }


@pytest.mark.skipif(
    not LIBFAKETIME.exists(),
    reason=f"libfaketime missing ({LIBFAKETIME}); apt-get install faketime",
)
@pytest.mark.parametrize("offset_minutes", [5, -5])
def test_a_host_with_its_clock_minutes_off_starts_timed_jobs_on_database_time(
    net: tuple[Network, BridgeCluster], offset_minutes: int
) -> None:
    network, cluster = net
    offset = offset_minutes * 60
    # libfaketime moves the wall clock of every call into libc (time, clock_gettime,
    # gettimeofday) of the process; its monotonic clock stays true, as an NTP-less host's does.
    env = {
        **os.environ,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": f"{offset:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }
    with cluster.database() as url:
        with on_host(
            network, 2, url, host_options(dead_after=10, extra=("--report-clock",)), env=env
        ) as skewed:
            (clock,) = skewed.expect("clock", 30)
            skew = float(clock) - time.time()
            # The test would prove nothing if the host's clock were right.
            assert abs(skew - offset) < 30
            skewed.expect("ready", 30)
            (job_id,) = query(
                url,
                "select pgxjob_schedule(%s, null, %s, now() + interval '1.5 seconds')",
                (JOB_TYPE, GROUPS[0]),
            )[0]
            wait_for(lambda: not pending_ids(url), 15, "the timed job")
            skewed.stop()
        ((late,),) = query(
            url,
            "select r.ran_at - j.run_at from chaos_runs r join pgxjob_job_runs j using (job_id)"
            " where job_id = %s",
            (job_id,),
        )
    assert 0 <= late.total_seconds() < 1, late
    REPORT.setdefault("clock", {})[f"{offset_minutes:+d}min"] = {
        "host_clock_off_seconds": round(skew),
        "started_after_due_seconds": round(late.total_seconds(), 3),
    }
