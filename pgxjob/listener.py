"""The listener: one connection per scheduler doing LISTEN, waking the workers of each group."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from pgxjob import queries
from pgxjob.errors import ListenConninfoError
from pgxjob.supervise import supervise

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler
    from pgxjob.worker import Worker

__all__ = ["Listener"]

logger = logging.getLogger(__name__)

_PING_INTERVAL = 30.0


class Listener:
    """Listens for pgxjob's notifications and signals the workers of the notified group.

    Both channels carry a group name: an ASAP job is available, or a timed job was scheduled
    (the worker then looks again at when its group's next job is due). After a dropped
    connection it reconnects with backoff and wakes every worker, since notifications sent
    meanwhile are lost.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._workers: dict[str, list[Worker]] = {}
        self._stop = threading.Event()
        self.connected = threading.Event()
        """Set while the listener's connection is listening."""
        self._thread = threading.Thread(
            target=supervise,
            args=("pgxjob listener", self._run),
            kwargs={"report": scheduler._report_error, "backoff": self._stop},
            name="pgxjob-listener",
            daemon=True,
        )
        self._thread.start()

    def add(self, worker: Worker) -> None:
        with self._lock:
            self._workers.setdefault(worker.group_name, []).append(worker)

    def remove(self, worker: Worker) -> None:
        with self._lock:
            workers = self._workers.get(worker.group_name, [])
            if worker in workers:
                workers.remove(worker)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _signal(self, group_name: str | None) -> None:
        with self._lock:
            if group_name is None:
                workers = [w for ws in self._workers.values() for w in ws]
            else:
                workers = list(self._workers.get(group_name, ()))
        for worker in workers:
            worker.signal()

    def _cancel(self, payload: str) -> None:
        # "<worker id> <job id>": only the worker holding the job has anything to do.
        try:
            worker_id, job_id = (int(part) for part in payload.split())
        except ValueError:
            logger.warning("pgxjob: ignoring a malformed cancel notification %r", payload)
            return
        with self._lock:
            workers = [w for ws in self._workers.values() for w in ws if w.id == worker_id]
        for worker in workers:
            worker._on_cancel(job_id)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        # A connection of its own, made as the scheduler's pool makes them (or to the scheduler's
        # listen_conninfo, past a transaction pooler), so that the listener is in the same
        # database and never holds a connection the workers need. Keepalives: a connection that
        # dies silently (host crash, NAT timeout) must raise.
        with self._scheduler._listen_connection(
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        ) as conn:
            yield conn

    def _check_same_database(self, conn: psycopg.Connection[Any]) -> None:
        # Notifications are per database: a listener elsewhere would hear nothing, silently.
        with self._scheduler.connection() as pooled:
            expected = queries.database_identity(pooled)
        found = queries.database_identity(conn)
        if found != expected:
            raise ListenConninfoError(
                f"listen_conninfo reaches database {found[0]!r} on a server with port {found[1]},"
                f" not the scheduler's database {expected[0]!r} (server port {expected[1]}); "
                "point it at the same database, directly rather than through the pooler"
            )

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    if self._scheduler.listen_conninfo is not None:
                        self._check_same_database(conn)
                    queries.listen(conn)
                    self.connected.set()
                    delay = 0.05
                    self._signal(None)
                    idle_since = time.monotonic()
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=0.5):
                            if notification.channel == queries.CANCEL_NOTIFY_CHANNEL:
                                self._cancel(notification.payload)
                            else:
                                self._signal(notification.payload)
                        if time.monotonic() - idle_since > _PING_INTERVAL:
                            # A round trip proves the connection is alive where keepalives
                            # cannot tell (a pooler between us and the server).
                            queries.ping(conn)
                            idle_since = time.monotonic()
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                self._scheduler._report_error(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.connected.clear()
