"""What the worker command shows while it runs (progress line, summary) and the table printer."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

import psycopg

from pgxjob import embedded, queries
from pgxjob.cli.common import first_line

logger = logging.getLogger("pgxjob.cli")


class ProgressLine:
    """The live line on stderr; log records clear it before they print."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.shown = False
        self.last_plain = 0.0

    def show(self, text: str) -> None:
        with self.lock:
            if self.tty:
                self.stream.write(f"\r\033[K{text}")
                self.shown = True
            elif time.monotonic() - self.last_plain >= 5.0:
                self.stream.write(f"{text}\n")
                self.last_plain = time.monotonic()
            self.stream.flush()

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self.shown = False

    def finish(self, text: str) -> None:
        with self.lock:
            if self.tty:
                self.stream.write(f"\r\033[K{text}\n")
            else:
                self.stream.write(f"{text}\n")
            self.shown = False
            self.stream.flush()


class ProgressAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, progress: ProgressLine | None) -> None:
        super().__init__(sys.stderr)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if self.progress is not None:
            self.progress.clear()
        super().emit(record)


class Progress:
    """Reads progress from the database, so it counts the runs of every process on the groups."""

    def __init__(
        self,
        db: embedded.Database,
        schema: str,
        groups: Sequence[str],
        line: ProgressLine | None,
    ):
        self.db = db
        self.schema = schema
        self.groups = set(groups)
        self.line = line
        self.conn: psycopg.Connection[Any] | None = None
        self.started = time.monotonic()
        # The run log's times come from the workers' clocks, and this process's workers share
        # this clock, so its own runs are all counted even if the database clock is skewed.
        self.since = dt.datetime.now(dt.UTC)
        self.samples: list[tuple[float, int]] = []
        self.remaining: int | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            # No prepared statements: the same query every half second, perhaps through a pooler
            # in transaction mode.
            self.conn = psycopg.connect(
                self.db.conninfo,
                autocommit=True,
                connect_timeout=5,
                application_name="pgxjob-cli",
                prepare_threshold=None,
            )
            queries.set_schema(self.conn, self.schema)
        return self.conn

    def start(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._connection()

    def remaining_jobs(self) -> int | None:
        """Jobs left in the served groups (None when the database cannot be read)."""
        try:
            counts = queries.job_counts(self._connection())
        except psycopg.Error as exc:
            logger.debug("progress: cannot read job counts: %s", exc)
            self._reset()
            return None
        self.remaining = sum(
            c.due + c.scheduled + c.retrying + c.locked
            for c in counts
            if c.group_name in self.groups
        )
        return self.remaining

    def stats(self) -> list[queries.JobRunStats]:
        return [
            s
            for s in queries.job_run_stats(self._connection(), self.since)
            if s.group_name in self.groups
        ]

    def update(self, *, final: bool = False) -> None:
        if self.line is None:
            return
        try:
            stats = self.stats()
        except psycopg.Error as exc:
            logger.debug("progress: cannot read run stats: %s", exc)
            self._reset()
            self.line.show("waiting for the database...")
            return
        succeeded = sum(s.succeeded for s in stats)
        failed = sum(s.failed for s in stats)
        retried = sum(s.retried for s in stats)
        done = succeeded + failed
        now = time.monotonic()
        self.samples.append((now, done + retried))
        # Rate over the last few seconds: the all-time average hides a slowdown.
        self.samples = [s for s in self.samples if now - s[0] <= 3.0] or self.samples[-1:]
        first_t, first_n = self.samples[0]
        rate = (done + retried - first_n) / (now - first_t) if now > first_t else 0.0
        remaining = self.remaining if self.remaining is not None else 0
        total = done + remaining
        fraction = done / total if total else 1.0
        width = 24
        filled = int(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        elapsed = duration_text(dt.timedelta(seconds=now - self.started))
        show = self.line.finish if final else self.line.show
        show(
            f"[{bar}] {fraction:4.0%}  done {done:,}  {rate:,.0f} jobs/s  failed {failed:,}  "
            f"retries {retried:,}  left {remaining:,}  {elapsed}"
        )

    def summary(self, out: IO[str]) -> None:
        try:
            stats = self.stats()
        except psycopg.Error as exc:
            out.write(f"no summary: cannot read the run log ({first_line(exc)})\n")
            return
        elapsed = time.monotonic() - self.started
        if self.line is not None:
            self.line.clear()
        if not stats:
            out.write("\nno job ran\n")
            return
        rows = [
            [
                s.group_name,
                s.job_type,
                count(s.runs),
                count(s.succeeded),
                count(s.retried),
                count(s.failed),
                duration_text(s.avg_duration),
                duration_text(s.p95_duration),
                duration_text(s.avg_wait),
            ]
            for s in stats
        ]
        runs = sum(s.runs for s in stats)
        rows.append(
            [
                "total",
                "",
                count(runs),
                count(sum(s.succeeded for s in stats)),
                count(sum(s.retried for s in stats)),
                count(sum(s.failed for s in stats)),
                "",
                "",
                "",
            ]
        )
        out.write("\n")
        table(
            out,
            ["group", "type", "runs", "ok", "retried", "failed", "avg run", "p95 run", "avg wait"],
            rows,
            right={2, 3, 4, 5, 6, 7, 8},
        )
        rate = runs / elapsed if elapsed > 0 else 0.0
        out.write(
            f"\n{runs:,} runs in {duration_text(dt.timedelta(seconds=elapsed))} "
            f"({rate:,.0f} runs/s)\n"
        )
        out.flush()

    def close(self) -> None:
        self._reset()

    def _reset(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


# -- tables and values ----------------------------------------------------------------------------


def table(
    out: IO[str], header: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]
) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(parts)).rstrip() + "\n"

    out.write(line(header))
    for row in rows:
        out.write(line(row))


def count(value: int) -> str:
    return f"{value:,}"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return duration_text(dt.timedelta(seconds=float(seconds)))


def duration_text(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total < 1:
        return f"{sign}{total * 1000:.0f}ms"
    if total < 60:
        return f"{sign}{total:.1f}s"
    minutes, secs = divmod(int(total), 60)
    if minutes < 60:
        return f"{sign}{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{sign}{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{sign}{days}d{hours:02d}h" if hours else f"{sign}{days}d"


def local_time(value: str | dt.datetime | None) -> str:
    if value is None:
        return "-"
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: str | None, limit: int) -> str:
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def json_default(value: object) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def display_path(path: os.PathLike[str] | str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
