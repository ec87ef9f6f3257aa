"""Periodic jobs: cron schedules kept in PostgreSQL and fired by workers, declared from Python."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["PeriodicJob"]


@dataclasses.dataclass(frozen=True)
class PeriodicJob:
    """A named cron schedule that makes a job of ``job_type`` at each fire time.

    Pass it as ``Scheduler(..., periodic_jobs=[...])``: the scheduler creates or updates it in the
    database when it starts, as it registers job types. The database fires it exactly once per
    fire time, on its own clock, whatever the number of workers; a worker of its group runs the
    job. Removing it from the list does not delete it: ``pgxjob periodic remove NAME`` or
    ``select pgxjob_unschedule_periodic(name)`` does.

    ``cron`` has five fields (minute hour day-of-month month day-of-week), or six with a leading
    seconds field, or a macro such as ``@daily``; it is evaluated in ``time_zone``.
    """

    name: str
    cron: str
    job_type: str
    params: Any = None
    group_name: str | None = dataclasses.field(default=None, kw_only=True)
    time_zone: str = dataclasses.field(default="UTC", kw_only=True)
    priority: int = dataclasses.field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        for field in ("name", "cron", "job_type", "time_zone"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"PeriodicJob {field} must be a non-empty string, got {value!r}")
        if self.group_name is not None and (
            not isinstance(self.group_name, str) or not self.group_name
        ):
            raise ValueError("PeriodicJob group_name must be a non-empty string or None")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise TypeError(f"PeriodicJob priority must be an int, got {self.priority!r}")
        if not -(2**31) <= self.priority < 2**31:
            raise ValueError(f"PeriodicJob priority must fit PostgreSQL's int, got {self.priority}")
