"""The worker's event loop: one thread that runs the coroutines of async handlers, and a watch
that reports a handler blocking it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from pgxjob.jobs import Job

__all__ = ["EventLoopThread"]

logger = logging.getLogger(__name__)

# How long stop() waits for the loop to finish its last callbacks.
_STOP_TIMEOUT = 5.0


class EventLoopThread:
    """An asyncio loop on a thread of its own, running one task per async job.

    While jobs run, the loop ticks every half ``block_threshold``; a watch thread that sees no
    tick for longer than ``block_threshold`` logs a warning naming the job whose handler holds
    the loop (as asyncio's debug mode reports slow callbacks, without its cost).
    """

    def __init__(self, name: str, *, block_threshold: float) -> None:
        self._name = name
        self._block_threshold = block_threshold
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._running: dict[asyncio.Task[Any], Job] = {}
        self._busy = threading.Event()
        self._stopping = threading.Event()
        self._tick_at = time.monotonic()
        self._ticking = False
        self.thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._watch = threading.Thread(target=self._watch_loop, name=f"{name}-watch", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._watch.start()

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run callback on the loop, from any thread; nothing once the loop is closed."""
        if threading.current_thread() is self.thread:
            callback()
            return
        with contextlib.suppress(RuntimeError):  # closed
            self.loop.call_soon_threadsafe(callback)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Start a task on the loop (from the loop's thread)."""
        self.loop.create_task(coroutine)

    # -- jobs ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, job: Job) -> Iterator[None]:
        """Inside a job's task on the loop: the watch and :meth:`cancel_all` know of it."""
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._running[task] = job
            self._busy.set()
        if not self._ticking:
            self._ticking = True
            self._tick()
        try:
            yield
        finally:
            with self._lock:
                del self._running[task]
                if not self._running:
                    self._busy.clear()

    def run(self, job: Job, awaitable: Awaitable[Any]) -> Any:
        """Await an awaitable on the loop for a runner thread, blocking it until done.

        For a sync handler that returns an awaitable; coroutine functions run as tasks.
        """

        async def guarded() -> Any:
            with self.running(job):
                return await awaitable

        return asyncio.run_coroutine_threadsafe(guarded(), self.loop).result()

    def cancel_all(self) -> int:
        """Cancel every running job's task (a shutdown deadline passed); return how many."""
        with self._lock:
            tasks = list(self._running)
        for task in tasks:
            self.call_soon(task.cancel)
        return len(tasks)

    # -- the loop thread ------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        while not self._stopping.is_set():
            try:
                self.loop.run_forever()
            except BaseException as exc:  # SystemExit or KeyboardInterrupt out of a callback
                logger.error("pgxjob %s: %s left the event loop", self._name, type(exc).__name__)
        try:
            # Async generators left suspended (the scheduler's async pool made on this loop by
            # a handler's schedule_async) are finalized, which closes what they hold.
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()

    def stop(self) -> None:
        """Stop the loop once its callbacks are done; wait a few seconds for it."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._busy.set()  # wakes the watch, which then ends
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return
        if threading.current_thread() is not self.thread:
            self.thread.join(_STOP_TIMEOUT)

    # -- the watch ------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._tick_at = time.monotonic()
        if self._running and not self._stopping.is_set():
            self.loop.call_later(self._block_threshold / 2, self._tick)
        else:
            self._ticking = False

    def _watch_loop(self) -> None:
        reported: asyncio.Task[Any] | None = None
        while not self._stopping.is_set():
            self._busy.wait()
            if self._stopping.wait(self._block_threshold / 2):
                return
            blocked_for = time.monotonic() - self._tick_at
            if blocked_for <= self._block_threshold or not self._ticking:
                reported = None
                continue
            task = _current_task(self.loop)
            if task is None or task is reported:
                continue
            with self._lock:
                job = self._running.get(task)
            if job is None:
                continue
            reported = task
            logger.warning(
                "pgxjob %s: job %s (%s) has blocked the event loop for %.2f s; an async handler "
                "must not block (use await asyncio.sleep, an async driver, or "
                "asyncio.to_thread for blocking calls): the other async jobs of this worker wait",
                self._name,
                job.id,
                job.type.name,
                blocked_for,
            )


def _current_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    # Read from another thread while the loop's thread is stuck inside the task: a lookup of the
    # loop's current task, which that thread is not changing at the moment.
    try:
        return asyncio.current_task(loop)
    except RuntimeError:
        return None
