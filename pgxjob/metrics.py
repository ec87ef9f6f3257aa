"""Hooks through which a worker reports its runs and flushes to a metrics exporter, if one is set.

The core imports nothing for metrics: with no recorder installed (the default) each hook costs a
module attribute read. :mod:`pgxjob.prometheus` installs a recorder for ``pgxjob worker
--metrics-port``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Recorder", "install", "recorder", "uninstall"]


class Recorder(Protocol):
    """What a worker process reports. Called from runner and flusher threads: keep it cheap."""

    def job_finished(
        self,
        group: str,
        job_type: str,
        outcome: str,
        duration: float,
        start_delay: float | None,
    ) -> None:
        """One run ended: outcome is succeeded, failed, retried or cancelled; times in seconds.

        start_delay is the time from the job's due time to its start, for first attempts (a
        retry's due time is not known to the worker); None otherwise.
        """

    def results_flushed(self, seconds: float) -> None:
        """One batch of results was recorded in the database, in ``seconds``."""


recorder: Recorder | None = None
"""The installed recorder, or None."""


def install(new: Recorder) -> None:
    """Make ``new`` receive every worker's reports in this process."""
    global recorder
    recorder = new


def uninstall() -> None:
    """Stop reporting."""
    global recorder
    recorder = None
