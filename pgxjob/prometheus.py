"""Prometheus metrics: a worker process's runs and flushes, and the queue as the database sees it.

Needs the ``dashboard`` extra (``prometheus_client``). :func:`serve_worker_metrics` is what
``pgxjob worker --metrics-port`` runs; :class:`DatabaseCollector` is what the dashboard's
``/metrics`` serves, one ``pgxjob_metrics()`` call per scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pgxjob import metrics, queries

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler

__all__ = ["DatabaseCollector", "WorkerMetrics", "serve_worker_metrics"]

# Job durations run from milliseconds to hours; start delays from milliseconds to a backlog's
# hours; a flush from a millisecond to a slow network's seconds.
_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
)
_DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600)
_FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WorkerMetrics:
    """The metrics of one worker process, as a :class:`pgxjob.metrics.Recorder`."""

    def __init__(self, registry: CollectorRegistry, scheduler: Scheduler | None = None) -> None:
        self.runs = Counter(
            "pgxjob_job_runs",
            "Job runs this process finished, by outcome (succeeded, failed, retried, cancelled).",
            ["group", "type", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "pgxjob_job_duration_seconds",
            "How long handlers ran.",
            ["group", "type"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.start_delay = Histogram(
            "pgxjob_job_start_delay_seconds",
            "From a job's due time to the start of its first attempt.",
            ["group"],
            buckets=_DELAY_BUCKETS,
            registry=registry,
        )
        self.flush = Histogram(
            "pgxjob_result_flush_seconds",
            "How long recording one batch of results in the database took.",
            buckets=_FLUSH_BUCKETS,
            registry=registry,
        )
        if scheduler is not None:
            registry.register(_PrefetchCollector(scheduler))

    def job_finished(
        self,
        group: str,
        job_type: str,
        outcome: str,
        duration: float,
        start_delay: float | None,
    ) -> None:
        self.runs.labels(group, job_type, outcome).inc()
        self.duration.labels(group, job_type).observe(duration)
        if start_delay is not None:
            self.start_delay.labels(group).observe(start_delay)

    def results_flushed(self, seconds: float) -> None:
        self.flush.observe(seconds)


class _PrefetchCollector(Collector):
    """pgxjob_prefetched_jobs{group}: claimed jobs waiting in this process for a runner."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pgxjob_prefetched_jobs",
            "Jobs this process has claimed and not started yet.",
            labels=["group"],
        )
        counts: dict[str, int] = {}
        for worker in self._scheduler.workers:
            counts[worker.group_name] = counts.get(worker.group_name, 0) + worker.prefetched
        for group, count in sorted(counts.items()):
            family.add_metric([group], count)
        yield family


class DatabaseCollector(Collector):
    """pgxjob_jobs, pgxjob_oldest_waiting_job_age_seconds and pgxjob_workers: one query a scrape.

    ``connection`` lends a connection for a ``with`` block (a pool's ``connection``, say) whose
    pgxjob functions are reachable (see :func:`pgxjob.queries.set_schema`).
    """

    _HELP: ClassVar[dict[str, tuple[str, list[str]]]] = {
        "pgxjob_jobs": (
            "Jobs by state: waiting (ASAP), due (timed, due now), scheduled (later), running "
            "(claimed by a worker).",
            ["group", "type", "state"],
        ),
        "pgxjob_oldest_waiting_job_age_seconds": (
            "How long the oldest unclaimed due job of the group has been due.",
            ["group"],
        ),
        "pgxjob_workers": ("Registered workers by state: alive, stale, dead.", ["group", "state"]),
    }

    def __init__(
        self, connection: Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
    ) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock, self._connection() as conn:
            rows = queries.metrics(conn)
        families = {
            name: GaugeMetricFamily(name, help_text, labels=labels)
            for name, (help_text, labels) in self._HELP.items()
        }
        for row in rows:
            family = families.get(row["metric"])
            if family is None:
                continue
            labels = {
                "pgxjob_jobs": [row["group_name"], row["job_type"], row["state"]],
                "pgxjob_oldest_waiting_job_age_seconds": [row["group_name"]],
                "pgxjob_workers": [row["group_name"], row["state"]],
            }[row["metric"]]
            family.add_metric(labels, float(row["value"]))
        yield from families.values()


def serve_worker_metrics(
    scheduler: Scheduler, port: int, *, addr: str = "0.0.0.0"
) -> tuple[WorkerMetrics, Callable[[], None]]:
    """Serve this process's worker metrics over HTTP on ``port``; returns them and a stopper.

    Installs the recorder every worker of the process reports to.
    """
    registry = CollectorRegistry()
    recorder = WorkerMetrics(registry, scheduler)
    server, thread = start_http_server(port, addr=addr, registry=registry)
    metrics.install(recorder)

    def stop() -> None:
        metrics.uninstall()
        server.shutdown()
        server.server_close()
        thread.join(5)

    return recorder, stop
