"""Durations: the one convention for every duration in pgxjob's API (seconds or a timedelta)."""

from __future__ import annotations

import datetime as dt
import math

__all__ = ["MAX_DURATION", "Seconds", "seconds", "to_timedelta"]

Seconds = int | float | dt.timedelta
"""A duration: seconds as an int or float, or a datetime.timedelta."""

MAX_DURATION = dt.timedelta(days=36525)
"""The longest duration accepted (100 years): longer ones overflow thread timeouts and can make
PostgreSQL's timestamp arithmetic fail."""


def seconds(value: Seconds, name: str, *, allow_zero: bool = True) -> float:
    """``value`` in seconds: a number or timedelta, finite, not negative, at most 100 years.

    ``name`` is the parameter's name, used in the error message. Raises ValueError for a bool,
    a negative, NaN or infinite value, a value over 100 years, and zero unless ``allow_zero``;
    TypeError for anything that is not a number or a timedelta.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a duration in seconds or a timedelta, got {value!r}")
    if isinstance(value, dt.timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float):
        result = float(value)
    else:
        raise TypeError(
            f"{name} must be a duration in seconds (int or float) or a datetime.timedelta, "
            f"got {type(value).__name__} {value!r}"
        )
    if math.isnan(result) or math.isinf(result):
        raise ValueError(f"{name} must be a finite duration, got {value!r}")
    if result < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    if result == 0 and not allow_zero:
        raise ValueError(f"{name} must be a positive duration, got {value!r}")
    if result > MAX_DURATION.total_seconds():
        raise ValueError(f"{name} must be at most 100 years, got {value!r}")
    return result


def to_timedelta(value: Seconds, name: str, *, allow_zero: bool = True) -> dt.timedelta:
    """Like :func:`seconds`, returned as a timedelta (a timedelta given is returned unchanged)."""
    checked = seconds(value, name, allow_zero=allow_zero)
    return value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=checked)
