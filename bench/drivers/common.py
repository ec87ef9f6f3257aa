"""What every benchmark driver shares: the consumer protocol with the runner, counters, memory.

Drivers run inside each system's own virtualenv, so this module uses the standard library only.

Consumer protocol (the runner speaks it over the driver's stdin and stdout):
  driver prints ``READY`` once it is connected and set up, without having fetched a job;
  runner writes ``GO``; the driver starts its worker and prints ``C <count> <t_last>`` whenever
  the number of handled jobs changes (at most every 20 ms), t_last being the wall-clock time the
  last handler finished; runner writes ``STOP``; the driver shuts its worker down and prints
  ``DONE <json>`` with peak RSS, an RSS trace and, in latency mode, the handler start times.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

RECORD = os.environ.get("BENCH_RECORD") == "1"


class Counter:
    """Counts handled jobs; in latency mode also records (i, start time) per job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.t_last = 0.0
        self.records: list[tuple[int, float]] = []

    def hit(self, params: Any) -> None:
        if RECORD:
            t = time.time()
            if isinstance(params, (str, bytes)):
                params = json.loads(params)
            self.records.append((int(params["i"]), t))
        with self._lock:
            self.count += 1
            self.t_last = time.time()


COUNTER = Counter()


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Reporter(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="bench-reporter", daemon=True)
        self.stop = threading.Event()
        self.t0 = time.time()
        self.rss: list[tuple[float, int]] = []

    def run(self) -> None:
        last = -1
        next_rss = 0.0
        while not self.stop.wait(0.02):
            c = COUNTER.count
            if c != last:
                last = c
                emit(f"C {c} {COUNTER.t_last:.6f}")
            now = time.time()
            if now >= next_rss:
                self.rss.append((round(now - self.t0, 2), rss_kb()))
                next_rss = now + 0.25

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        self.join(2)
        emit(f"C {COUNTER.count} {COUNTER.t_last:.6f}")
        return {
            "count": COUNTER.count,
            "peak_rss_kb": peak_rss_kb(),
            "rss_trace": self.rss,
            "records": COUNTER.records,
        }


def _expect(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"driver expected {word!r} on stdin, got {line!r}")


def serve_consumer_sync(start: Callable[[], None], stop: Callable[[], None]) -> None:
    """Run the consumer protocol for a thread-based system."""
    emit("READY")
    _expect("GO")
    reporter = _Reporter()
    reporter.start()
    start()
    _expect("STOP")
    stop()
    emit("DONE " + json.dumps(reporter.finish()))


def serve_consumer_async(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the consumer protocol for an asyncio system; stdin is read on a thread.

    ``prepare`` connects and sets up before READY, so that the timed part starts the worker only.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        go = asyncio.Event()
        halt = asyncio.Event()

        def read_stdin() -> None:
            _expect("GO")
            loop.call_soon_threadsafe(go.set)
            _expect("STOP")
            loop.call_soon_threadsafe(halt.set)

        if prepare is not None:
            await prepare()
        threading.Thread(target=read_stdin, name="bench-stdin", daemon=True).start()
        emit("READY")
        await go.wait()
        reporter = _Reporter()
        reporter.start()
        await start()
        await halt.wait()
        await stop()
        emit("DONE " + json.dumps(reporter.finish()))

    asyncio.run(main())


def result(obj: dict[str, Any]) -> None:
    """Print a producer-side result for the runner."""
    emit("RESULT " + json.dumps(obj))


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


def chunks(seq: list[Any], size: int) -> list[list[Any]]:
    return [seq[k : k + size] for k in range(0, len(seq), size)]


def params_for(n: int, start: int = 0) -> list[dict[str, int]]:
    return [{"i": start + k} for k in range(n)]


def keyed_plan(
    n: int, levels: int, keyed_share: float, seed: int = 1
) -> list[tuple[int, int, str | None]]:
    """(i, priority, unique key or None) for n jobs: priorities 0..levels-1 in equal shares and
    round(n * keyed_share) distinct keys, each shuffled on its own so neither follows insertion
    order."""
    rng = random.Random(seed)
    prios = [k % levels for k in range(n)]
    keyed = [k < round(n * keyed_share) for k in range(n)]
    rng.shuffle(prios)
    rng.shuffle(keyed)
    return [(i, prios[i], f"bench-{i}" if keyed[i] else None) for i in range(n)]


def by_priority(
    plan: list[tuple[int, int, str | None]],
) -> dict[int, list[tuple[int, str | None]]]:
    """Group a slice of a keyed plan by priority, highest first, keeping insertion order."""
    out: dict[int, list[tuple[int, str | None]]] = {}
    for i, prio, key in sorted(plan, key=lambda x: -x[1]):
        out.setdefault(prio, []).append((i, key))
    return out


def runtime(client: str, library: str, **extra: Any) -> None:
    """Print what this driver runs on: its client library (``psycopg`` or ``asyncpg``) and how
    that library is built.

    psycopg reports ``psycopg.pq.__impl__`` (python, c or binary) and the libpq it uses; asyncpg
    speaks the protocol itself (a compiled Cython module, no libpq), so it reports that module.
    """
    info: dict[str, Any] = {
        "driver": os.path.basename(sys.argv[0]),
        "client": client,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    if library == "psycopg":
        import psycopg

        v = psycopg.pq.version()
        info["library"] = f"psycopg {psycopg.__version__}"
        info["impl"] = f"psycopg.pq.__impl__ = {psycopg.pq.__impl__}"
        info["libpq"] = f"{v // 10000}.{v % 100}"
    elif library == "asyncpg":
        import asyncpg
        import asyncpg.protocol.protocol as proto

        built = "compiled" if (proto.__file__ or "").endswith((".so", ".pyd")) else "pure Python"
        info["library"] = f"asyncpg {asyncpg.__version__}"
        info["impl"] = f"asyncpg protocol {built} (Cython), no libpq"
        info["libpq"] = "not used"
    result({**info, **extra})


def parse_args() -> tuple[str, str, dict[str, Any]]:
    """argv: MODE DSN JSON_OPTIONS (DSN is unused by mode ``runtime``)."""
    mode, dsn = sys.argv[1], sys.argv[2]
    opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    return mode, dsn, opts


class SteadyBacklog:
    """Lets a steady-state producer pause while the backlog is above a cap (checked sparsely)."""

    def __init__(self, cap: int, every: int = 10) -> None:
        self.cap = cap
        self.every = every
        self.n = 0

    def due(self) -> bool:
        self.n += 1
        return self.n % self.every == 0
