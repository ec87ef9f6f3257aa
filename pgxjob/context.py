"""The context scheduler: which Scheduler :func:`pgxjob.ctx` returns where."""

from __future__ import annotations

import contextvars
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler

__all__ = ["ctx", "current"]

current: contextvars.ContextVar[Scheduler | None] = contextvars.ContextVar(
    "pgxjob_scheduler", default=None
)
"""The scheduler of the current context: set by ``scheduler.with_context()`` and, inside a
handler, to the scheduler whose worker runs the job."""


def ctx() -> Scheduler | None:
    """The scheduler of the current context, else ``pgxjob.default_context_scheduler``, else None.

    Inside a handler it is the scheduler whose worker runs the job, unless the handler entered
    another scheduler's ``with_context()``.
    """
    scheduler = current.get()
    if scheduler is None:
        # Read from the package at call time, so `pgxjob.default_context_scheduler = s` works;
        # through sys.modules, so this module imports nothing of the package's.
        package = sys.modules.get("pgxjob")
        scheduler = getattr(package, "default_context_scheduler", None)
    return scheduler
