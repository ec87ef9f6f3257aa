"""Parsing the command line: durations, run times, JSON params and the argument parser."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any, NoReturn

from pgxjob.cli.common import EXIT_USAGE, PROG, UsageError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DurationTooLongError(ValueError):
    """A duration that parses but does not fit a timedelta."""


def parse_duration(text: str) -> dt.timedelta:
    """Parse a duration such as ``30s``, ``5m``, ``1h30m``, ``2.5h``, ``30d`` or ``1w``.

    Raises ValueError with a message that says what is accepted.
    """
    compact = text.strip().lower()
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(compact):
        if compact[position : match.start()].strip():
            break
        total += float(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    if position == 0 or compact[position:].strip():
        raise ValueError(
            f"cannot parse duration {text!r}: use a number with a unit (ms, s, m, h, d, w), "
            "for example 30s, 5m, 1h30m or 30d"
        )
    try:
        return dt.timedelta(seconds=total)
    except OverflowError:
        raise DurationTooLongError(
            f"duration {text!r} is too long: use at most 999999999 days"
        ) from None


def parse_run_at(text: str) -> tuple[dt.datetime | None, dt.timedelta | None]:
    """Parse ``--run-at``: ``now``, a delay (``+10m``, ``in 2h``, ``90s``) or an ISO 8601 time.

    Returns (time, None) for an absolute time (a time without offset is local time), (None,
    delay) for a delay, which is added to the database clock, and (None, None) for ``now``.
    """
    value = text.strip()
    lowered = value.lower()
    if lowered in ("now", "asap"):
        return None, None
    relative = lowered
    if relative.startswith("+"):
        relative = relative[1:]
    elif relative.startswith("in "):
        relative = relative[3:]
    if relative and not relative[0].isdigit():
        relative = ""
    if relative and not re.match(r"^\d{4}-", relative):
        try:
            return None, parse_duration(relative)
        except DurationTooLongError as exc:
            raise ValueError(f"cannot use --run-at {text!r}: {exc}") from None
        except ValueError:
            pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"cannot parse --run-at {text!r}: use an ISO 8601 time such as "
            "2030-01-31T09:00:00Z, a delay such as +10m or 'in 2h', or now"
        ) from None
    if when.tzinfo is None:
        try:
            when = when.astimezone()
        except (ValueError, OverflowError):
            raise ValueError(
                f"cannot use --run-at {text!r} as local time; give it an offset, "
                "for example 0001-01-01T00:00:00Z"
            ) from None
    return when, None


def params_json(text: str | None) -> str | None:
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    try:
        json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"PARAMS_JSON is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}): pass one JSON value, for example '{{\"order_id\": 42}}'"
        ) from None
    except RecursionError:
        # Too deep for Python's parser, maybe not for PostgreSQL's: it decides (cmd_schedule).
        pass
    except ValueError as exc:
        raise UsageError(f"PARAMS_JSON is not usable JSON: {exc}") from None
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; PostgreSQL's json type rejects it")


# -- argument parser ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        # One line, whatever argparse put in the message (an argument may hold a newline).
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_MAX_INT = 2**31 - 1  # PostgreSQL's int


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not minimum <= value <= _MAX_INT:
        raise argparse.ArgumentTypeError(f"{text!r} must be from {minimum} to {_MAX_INT}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _priority(text: str) -> int:
    return _whole_number(text, -_MAX_INT - 1)


def _job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a whole number)") from None
    if not 1 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (1 to {2**63 - 1})")
    return value


def _unique_key(text: str) -> str:
    if "\x00" in text or len(text.encode("utf-8", "surrogateescape")) > 1000:
        raise argparse.ArgumentTypeError("a unique key has at most 1000 bytes and no NUL")
    return text


def _port(text: str) -> int:
    port = _whole_number(text, 1)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {text!r}")
    return port


def _seconds(text: str) -> float:
    """Seconds as a number (``2.5``) or a duration with a unit (``500ms``, ``1m``)."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text).total_seconds()
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero")
    return value


def _duration(text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are SUPPRESS, so `pgxjob -v status` and `pgxjob status -v`
    # both work and a subcommand does not reset what was given before it.
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help="PostgreSQL URL or libpq conninfo (default: $DATABASE_URL, else the embedded "
        "PostgreSQL in .pgxjob/pg)",
    )
    parser.add_argument(
        "--schema",
        metavar="SCHEMA",
        default=default,
        help="the schema pgxjob is migrated into (default: public; for worker, the schema of "
        "APP's Scheduler)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="debug logging, and a traceback with every error",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print only results and errors",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the pgxjob command."""
    parser = _Parser(
        prog=PROG,
        description="pgxjob: a job runner on PostgreSQL.",
        epilog="Exit codes: 0 success, 1 runtime error, 2 usage error.",
    )
    _common_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common_options(sub, top=False)
        return sub

    migrate = command("migrate", "apply pgxjob's schema migrations to the database")
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 unless the schema is up to date",
    )

    worker = command("worker", "run workers for APP's job handlers until SIGINT or SIGTERM")
    worker.add_argument(
        "app",
        metavar="APP",
        help="module:attribute naming a pgxjob.Scheduler, or a callable that takes the "
        "database conninfo and returns one",
    )
    worker.add_argument(
        "-g",
        "--group",
        dest="groups",
        action="append",
        metavar="GROUP",
        help="job group to serve; repeat for several workers in this process (default: default)",
    )
    worker.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        default=10,
        metavar="N",
        help="jobs run at once, per worker (default: 10)",
    )
    worker.add_argument(
        "--prefetch",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="jobs claimed ahead of running them, per worker (default: 1000)",
    )
    worker.add_argument(
        "--poll-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="look for jobs at least this often (default: 10)",
    )
    worker.add_argument(
        "--max-buffered-results",
        type=_positive_int,
        default=100,
        metavar="N",
        help="record results when this many are buffered (default: 100)",
    )
    worker.add_argument(
        "--max-buffered-result-age",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="record results when the oldest is this old (default: 1)",
    )
    worker.add_argument(
        "--heartbeat",
        type=_seconds,
        default=45.0,
        metavar="SECONDS",
        help="minimum delay between heartbeats (default: 45)",
    )
    worker.add_argument(
        "--heartbeat-jitter",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="random extra delay added to each heartbeat (default: 30)",
    )
    worker.add_argument(
        "--dead-after",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="reap a worker silent this long (default: 5 heartbeat periods)",
    )
    worker.add_argument(
        "--no-listen",
        dest="listen",
        action="store_false",
        help="poll only, without LISTEN (for PgBouncer in transaction mode)",
    )
    worker.add_argument(
        "--listen-database-url",
        metavar="URL",
        default=None,
        help="LISTEN over a direct connection to this URL, the same database reached without "
        "the pooler (for PgBouncer in transaction mode); env PGXJOB_LISTEN_DATABASE_URL",
    )
    worker.add_argument(
        "--log-final-runs-only",
        action="store_true",
        help="write only a job's final run to the run log, not each retried attempt",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM wait at most this long for running jobs (default: no limit; "
        "a second signal stops at once)",
    )
    worker.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending migrations before starting",
    )
    worker.add_argument(
        "--until-empty",
        action="store_true",
        help="shut down once the served groups have no jobs left, timed jobs included",
    )
    worker.add_argument(
        "--progress",
        action="store_true",
        help="show a live progress line on stderr and a summary table at the end",
    )
    worker.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="log level of the worker's log on stderr (default: info, or warning with --progress)",
    )

    worker.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="N",
        help="serve this process's Prometheus metrics on port N (needs the dashboard extra)",
    )
    worker.add_argument(
        "--metrics-bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="the address of --metrics-port (default: 127.0.0.1; 0.0.0.0 for every interface)",
    )

    schedule = command("schedule", "schedule a job and print its id")
    schedule.add_argument("job_type", metavar="TYPE", help="a registered job type")
    schedule.add_argument(
        "params",
        metavar="PARAMS_JSON",
        nargs="?",
        help="the job's params as one JSON value ('-' reads it from stdin; default: null)",
    )
    schedule.add_argument(
        "--group", metavar="GROUP", help="run in this group (default: the type's default group)"
    )
    schedule.add_argument(
        "--run-at",
        metavar="WHEN",
        help="an ISO 8601 time (2030-01-31T09:00:00Z; no offset = local time), a delay on the "
        "database clock (+10m, 'in 2h', 90s) or now (default)",
    )
    schedule.add_argument(
        "--priority",
        type=_priority,
        default=0,
        metavar="N",
        help="higher runs first among the group's due jobs (default: 0)",
    )
    schedule.add_argument(
        "--unique-key",
        type=_unique_key,
        metavar="KEY",
        help="while a job of this type holds KEY, print its id instead of scheduling another",
    )

    cancel = command("cancel", "cancel jobs: remove waiting ones, ask workers to stop running ones")
    cancel.add_argument("job_ids", metavar="JOB_ID", nargs="+", type=_job_id, help="a job id")
    cancel.add_argument("--json", action="store_true", help="print one JSON object per job")

    status = command("status", "show jobs per group and type, workers and recent failures")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument(
        "--failures",
        type=_non_negative_int,
        default=5,
        metavar="N",
        help="how many recent failed runs to show (default: 5)",
    )

    periodic = command("periodic", "list periodic jobs, or remove one")
    periodic.add_argument(
        "action", choices=["list", "remove"], help="list: every schedule; remove NAME: delete one"
    )
    periodic.add_argument("name", metavar="NAME", nargs="?", help="the schedule to remove")
    periodic.add_argument("--json", action="store_true", help="list: one JSON object per line")

    runs = command("runs", "show the run log, newest first")
    runs.add_argument("--failed", action="store_true", help="only runs that failed")
    runs.add_argument("--type", dest="job_type", metavar="TYPE", help="only runs of this type")
    runs.add_argument("--group", metavar="GROUP", help="only runs in this group")
    runs.add_argument(
        "--job", dest="job_id", type=_job_id, metavar="JOB_ID", help="only this job's runs"
    )
    runs.add_argument(
        "-n",
        "--limit",
        type=_positive_int,
        default=20,
        metavar="N",
        help="how many runs (default: 20)",
    )
    runs.add_argument("--json", action="store_true", help="print JSON lines, params included")

    prune = command("prune", "delete old rows of the run log")
    prune.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="delete runs that finished longer ago than this, for example 30d or 12h",
    )

    dashboard = command(
        "dashboard", "serve the web dashboard and its Prometheus /metrics (dashboard extra)"
    )
    dashboard.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="listen on this address (default: 127.0.0.1; any other needs --token-file)",
    )
    dashboard.add_argument(
        "--port", type=_port, default=8080, metavar="N", help="listen on this port (default: 8080)"
    )
    dashboard.add_argument(
        "--read-only", action="store_true", help="show everything, offer no action"
    )
    dashboard.add_argument(
        "--token-file",
        metavar="PATH",
        help="a file (mode 600) holding a token of at least 16 characters that every page, "
        "action and /metrics then needs",
    )
    dashboard.add_argument(
        "--base-path",
        metavar="PATH",
        default="",
        help="serve under this path, for example /jobs behind a reverse proxy (default: /)",
    )

    embedded_cmd = command(
        "embedded", "start, stop or inspect the embedded PostgreSQL in .pgxjob/pg"
    )
    embedded_cmd.add_argument(
        "action",
        choices=["start", "stop", "status", "url"],
        help="start: start it and print its URL; stop: stop it; status: say whether it runs; "
        "url: print its URL if it runs",
    )
    return parser
