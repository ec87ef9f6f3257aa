"""Supervision of background loops: nothing a loop raises, nor a failing handle_error, kills it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["ErrorReporter", "safe_reporter", "supervise"]

logger = logging.getLogger(__name__)

ErrorReporter = Callable[[BaseException], None]
"""Receives an error that a background loop survived (the Scheduler's handle_error, made safe)."""

# A loop that crashes this many times in a row, each time within _CRASH_WINDOW seconds of its
# restart, is taken to be unable to go on.
_MAX_CRASHES = 5
_CRASH_WINDOW = 60.0


def safe_reporter(handle_error: Callable[[], Callable[[BaseException], None]]) -> ErrorReporter:
    """An ErrorReporter that calls ``handle_error()(err)`` and survives it raising.

    ``handle_error`` is looked up at each call, so a callback replaced later is used. When the
    callback raises, both its error and the one it was given go to the ``pgxjob`` log instead.
    """

    def report(err: BaseException) -> None:
        try:
            handle_error()(err)
        except Exception as failure:
            with contextlib.suppress(Exception):  # a logging handler that raises too
                logger.error(
                    "pgxjob: handle_error raised %s while reporting this error:",
                    type(failure).__name__,
                    exc_info=err,
                )
                logger.error("pgxjob: the error handle_error raised:", exc_info=failure)

    return report


def supervise(
    name: str,
    body: Callable[[], None],
    *,
    report: ErrorReporter,
    backoff: threading.Event,
    give_up: Callable[[BaseException], None] | None = None,
) -> None:
    """Run ``body`` until it returns; restart it, after a pause, whenever it raises.

    Each crash is logged and reported. The pause doubles from 50 ms to 5 s and ends early when
    ``backoff`` is set (so shutdown never waits on it); ``body`` is then restarted, and returns
    at once if it sees it should stop. After five crashes in a row, each within a minute of the
    restart, ``give_up`` is called with the last error (never, when it is None) and the loop ends.
    """
    delay = 0.05
    crashes = 0
    while True:
        started = time.monotonic()
        try:
            body()
            return
        except BaseException as exc:  # no exception may end a background loop silently
            if time.monotonic() - started > _CRASH_WINDOW:
                crashes, delay = 0, 0.05
            crashes += 1
            with contextlib.suppress(Exception):  # a logging handler that raises
                logger.error("pgxjob: %s crashed (%d in a row)", name, crashes, exc_info=exc)
            report(exc)
            if give_up is not None and crashes >= _MAX_CRASHES:
                try:
                    logger.critical("pgxjob: %s cannot go on after %d crashes", name, crashes)
                    give_up(exc)
                except BaseException as failure:  # pragma: no cover - defensive
                    report(failure)
                return
        backoff.wait(delay)
        delay = min(delay * 2, 5.0)
