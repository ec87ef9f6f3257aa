"""OpenTelemetry traces: a span per schedule call and per run, when ``opentelemetry-api`` is there.

This module imports nothing of OpenTelemetry itself. The first Scheduler made asks
:func:`available`, which imports the implementation (:mod:`pgxjob._otel`, and with it
OpenTelemetry) once, if the ``otel`` extra is installed. Without it :func:`tracing_for` returns
None, and a worker pays one attribute read per run. With it, spans go to the tracer provider
given to the Scheduler, else to OpenTelemetry's global one; while that is OpenTelemetry's default
(no SDK configured yet) or a no-op provider, no span is made at all, and a worker pays one
provider look-up per run.

The trace context travels with the job as a W3C ``traceparent`` (the ``trace_context`` argument
of ``pgxjob_schedule``): the span of each run is a child of the span that scheduled the job, and a
job scheduled without one (from SQL, a trigger, a periodic schedule) starts a trace of its own.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from pgxjob._otel import Tracing

__all__ = ["NO_SPAN", "NoSpan", "available", "tracing_for"]

# The implementation module, imported on the first ask: None until then, False when
# OpenTelemetry is not installed.
_impl: Any = None
_impl_lock = threading.Lock()


def available() -> bool:
    """Whether OpenTelemetry's API can be imported (imported once, on the first ask)."""
    global _impl
    impl = _impl
    if impl is None:
        with _impl_lock:
            impl = _impl
            if impl is None:
                try:
                    from pgxjob import _otel as impl
                except ImportError:  # the otel extra is not installed
                    impl = False
                _impl = impl
    return impl is not False


def tracing_for(provider: TracerProvider | None) -> Tracing | None:
    """The tracing of a Scheduler: spans through ``provider`` (None: the global provider).

    None when OpenTelemetry is not installed: then no hook is ever called.
    """
    if not available():
        if provider is not None:
            raise TypeError("tracer_provider was given, but opentelemetry-api cannot be imported")
        return None
    tracing: Tracing = _impl.Tracing.for_provider(provider)
    return tracing


class NoSpan:
    """The schedule span when no span is made: no trace context, nothing recorded."""

    __slots__ = ()

    trace_context: str | None = None

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def scheduled(self, job_ids: list[int]) -> None:
        """The call returned these ids."""


NO_SPAN = NoSpan()
