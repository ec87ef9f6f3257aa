"""The OpenTelemetry side of :mod:`pgxjob.tracing`, imported only when opentelemetry-api is."""

from __future__ import annotations

import logging
import re
from importlib import metadata
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as _context
from opentelemetry import trace as _trace

from pgxjob.jobs import ErrorWithRetry, error_text, failure_text
from pgxjob.tracing import NO_SPAN, NoSpan

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from pgxjob.jobs import Job

__all__ = ["RunSpan", "ScheduleSpan", "Tracing"]

logger = logging.getLogger(__name__)

SYSTEM = "pgxjob"
"""The ``messaging.system`` of every pgxjob span."""


def _version() -> str | None:
    try:
        return metadata.version("pgxjob")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return None


def _inert_providers() -> tuple[type, ...]:
    # The providers whose tracers make no span: the global default before an SDK is set, and the
    # no-op ones (their class names changed across opentelemetry-api versions).
    names = ("ProxyTracerProvider", "NoOpTracerProvider", "_DefaultTracerProvider")
    return tuple(c for c in (getattr(_trace, name, None) for name in names) if isinstance(c, type))


class Tracing:
    """The spans of one Scheduler: its schedule calls and its workers' runs."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._given = provider
        self._inert = _inert_providers()
        self._version = _version()
        # (provider, its tracer or None), replaced in one assignment, so that threads never see
        # a tracer of another provider.
        self._resolved: tuple[Any, Tracer | None] = (object(), None)

    @classmethod
    def for_provider(cls, provider: TracerProvider | None) -> Tracing:
        """Spans through ``provider``, or through the global provider when it is None."""
        if provider is not None and not isinstance(provider, _trace.TracerProvider):
            raise TypeError(
                "tracer_provider must be an opentelemetry.trace.TracerProvider or None, got "
                f"{type(provider).__name__}"
            )
        return cls(provider)

    def tracer(self) -> Tracer | None:
        """The tracer to make spans with now; None while the provider makes no spans."""
        provider = self._given if self._given is not None else _trace.get_tracer_provider()
        resolved_for, tracer = self._resolved
        if provider is resolved_for:
            return tracer
        if isinstance(provider, self._inert):
            tracer = None
        else:
            tracer = provider.get_tracer("pgxjob", self._version)
        self._resolved = (provider, tracer)
        return tracer

    def schedule_span(self, job_type: str, group_name: str | None) -> ScheduleSpan | NoSpan:
        """A span around one schedule call (``with``); its ``trace_context`` goes with the jobs."""
        try:
            tracer = self.tracer()
            if tracer is None:
                return NO_SPAN
            return ScheduleSpan(tracer, job_type, group_name)
        except Exception:
            # A tracer or span processor that raises must not stop the job from being scheduled.
            logger.exception("pgxjob: starting a schedule span failed; scheduling without it")
            return NO_SPAN

    def run_span(self, job: Job) -> RunSpan | None:
        """Start the span of one run, current until :meth:`RunSpan.end`; None: no span."""
        try:
            tracer = self.tracer()
            if tracer is None:
                return None
            return RunSpan(tracer, job)
        except Exception:
            # Nor from running: the job runs without a span.
            logger.exception(
                "pgxjob: starting the span of job %s failed; running without it", job.id
            )
            return None


class ScheduleSpan:
    """A PRODUCER span around one schedule call, current inside its ``with`` block."""

    __slots__ = ("_span", "_token", "trace_context")

    def __init__(self, tracer: Tracer, job_type: str, group_name: str | None) -> None:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "schedule",
            "pgxjob.job.type": job_type,
        }
        if group_name is not None:
            attributes["messaging.destination.name"] = group_name
        self._span = tracer.start_span(
            f"pgxjob schedule {job_type}",
            kind=_trace.SpanKind.PRODUCER,
            attributes=attributes,
            # Recorded below without str() of the exception, which could raise.
            record_exception=False,
            set_status_on_exception=False,
        )
        context = self._span.get_span_context()
        self.trace_context: str | None = None
        if context.is_valid:
            self.trace_context = (
                f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
            )
        self._token = _context.attach(_trace.set_span_in_context(self._span))

    def __enter__(self) -> ScheduleSpan:
        return self

    def scheduled(self, job_ids: list[int]) -> None:
        """The call returned these ids: one is the job's, several a batch's."""
        try:
            if len(job_ids) == 1:
                self._span.set_attribute("pgxjob.job.id", job_ids[0])
                self._span.set_attribute("messaging.message.id", str(job_ids[0]))
            else:
                self._span.set_attribute("messaging.batch.message_count", len(job_ids))
        except Exception:
            logger.exception("pgxjob: recording a schedule span failed")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None:
                _record_error(self._span, exc)
        finally:
            _close(self._span, self._token)


class RunSpan:
    """The CONSUMER span of one run: a child of the span that scheduled the job, else a root.

    Current from its start until :meth:`end`, so spans the handler makes are its children. Ended
    in the thread (or task) that started it.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, tracer: Tracer, job: Job) -> None:
        # The job's traceparent alone, never the ambient context: a job scheduled without one
        # starts a trace of its own, and so does one whose traceparent cannot be read.
        parent = _context.Context()
        if job.trace_context is not None:
            parent = _remote_parent(job.trace_context, parent)
        self._span: Span | None = tracer.start_span(
            f"pgxjob run {job.type.name}",
            context=parent,
            kind=_trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "run",
                "messaging.destination.name": job.group.name,
                "messaging.message.id": str(job.id),
                "pgxjob.job.id": job.id,
                "pgxjob.job.type": job.type.name,
                "pgxjob.job.attempt": job.error_count + 1,
            },
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = _context.attach(_trace.set_span_in_context(self._span))

    def end(self, outcome: str | None, err: BaseException | None) -> None:
        """End the run: outcome is succeeded, failed, retried, cancelled, or None when the job
        was handed back without a result (shutdown). Later calls do nothing."""
        span = self._span
        if span is None:
            return
        self._span = None
        try:
            if outcome is not None:
                span.set_attribute("pgxjob.job.outcome", outcome)
            if err is not None and outcome != "cancelled":
                _record_error(span, err)
        except Exception:
            logger.exception("pgxjob: recording the span of a run failed")
        finally:
            _close(span, self._token)


# W3C Trace Context: version, trace id, parent id, flags, in lowercase hex; version ff is
# invalid, and so are all-zero ids (SpanContext makes those invalid). pgxjob_schedule stores
# nothing else, but the table may hold what an older or a hostile writer put there.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _remote_parent(traceparent: str, empty: Any) -> Any:
    """The context whose span is the remote parent a traceparent names; ``empty`` if none.

    What TraceContextTextMapPropagator.extract does for this one header, in a third of its time:
    it runs once per traced run.
    """
    match = _TRACEPARENT.fullmatch(traceparent) if len(traceparent) == 55 else None
    if match is None or match[1] == "ff":
        return empty
    span_context = _trace.SpanContext(
        int(match[2], 16),
        int(match[3], 16),
        is_remote=True,
        trace_flags=_trace.TraceFlags(int(match[4], 16)),
    )
    if not span_context.is_valid:
        return empty
    return _trace.set_span_in_context(_trace.NonRecordingSpan(span_context), empty)


def _close(span: Span, token: object) -> None:
    # A tracer or span processor that raises must not take a runner (or a schedule call) down.
    try:
        _context.detach(token)  # type: ignore[arg-type]
    finally:
        try:
            span.end()
        except Exception:
            logger.exception("pgxjob: ending a span failed")


def _type_name(err: BaseException) -> str:
    cls = type(err)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _record_error(span: Span, err: BaseException) -> None:
    """The error on the span: status, ``error.type`` and an ``exception`` event.

    Built from pgxjob's own texts, which never raise: OpenTelemetry's record_exception calls
    str() of the exception, which a handler's exception may make raise. For an ErrorWithRetry
    the error is its inner one.
    """
    inner = err.err if isinstance(err, ErrorWithRetry) else err
    summary = error_text(inner)
    name = type(inner).__name__
    message = summary[len(name) + 2 :] if summary.startswith(name + ": ") else ""
    _, _, stacktrace = failure_text(err).partition("\n\n")
    span.set_attribute("error.type", _type_name(inner))
    span.add_event(
        "exception",
        {
            "exception.type": _type_name(inner),
            "exception.message": message,
            "exception.stacktrace": stacktrace,
        },
    )
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, summary))
