"""The ``pgxjob`` command line: migrate, worker, schedule, status, runs, prune and embedded.

Every command picks its database the same way: ``--database-url``, else ``DATABASE_URL``, else
the embedded PostgreSQL in ``.pgxjob/pg`` (see :mod:`pgxjob.embedded`). Exit codes: 0 success,
1 the command failed at run time (database unreachable or not migrated, unknown job type, ...),
2 the command line itself is wrong (bad JSON, bad time, an APP that is not a Scheduler, ...).
Errors are one line on stderr; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgxjob import embedded, migrations, queries
from pgxjob.errors import NotReadyError, PgxjobError

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler
    from pgxjob.worker import Worker

__all__ = ["main", "parse_duration", "parse_run_at"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "pgxjob"


class UsageError(Exception):
    """The command line is wrong: exit code 2."""


class CommandError(Exception):
    """The command failed at run time: exit code 1."""


# -- parsing values -------------------------------------------------------------------------------

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


def _params_json(text: str | None) -> str | None:
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

    status = command("status", "show jobs per group and type, workers and recent failures")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument(
        "--failures",
        type=_non_negative_int,
        default=5,
        metavar="N",
        help="how many recent failed runs to show (default: 5)",
    )

    runs = command("runs", "show the run log, newest first")
    runs.add_argument("--failed", action="store_true", help="only runs that failed")
    runs.add_argument("--type", dest="job_type", metavar="TYPE", help="only runs of this type")
    runs.add_argument("--group", metavar="GROUP", help="only runs in this group")
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


# -- database -------------------------------------------------------------------------------------


def _resolve(args: argparse.Namespace) -> embedded.Database:
    try:
        return embedded.resolve_database(args.database_url)
    except embedded.EmbeddedUnavailableError as exc:
        raise CommandError(str(exc)) from exc


@contextlib.contextmanager
def _connect(db: embedded.Database) -> Iterator[psycopg.Connection[Any]]:
    try:
        options = conninfo_to_dict(db.conninfo)
    except psycopg.ProgrammingError as exc:
        raise UsageError(
            f"invalid database URL from {db.source}: {_first_line(exc)}; use "
            "postgresql://user:password@host:port/dbname"
        ) from exc
    extra: dict[str, Any] = {}
    if "connect_timeout" not in options:
        extra["connect_timeout"] = 10
    if "application_name" not in options:
        extra["application_name"] = "pgxjob-cli"
    try:
        conn = psycopg.connect(db.conninfo, autocommit=True, **extra)
    except psycopg.OperationalError as exc:
        raise CommandError(
            f"cannot connect to the database {db.describe()}: {_first_line(exc)}; check "
            "--database-url or DATABASE_URL and that the server is running"
        ) from exc
    with conn:
        yield conn


@contextlib.contextmanager
def _migrated(db: embedded.Database) -> Iterator[psycopg.Connection[Any]]:
    with _connect(db) as conn:
        try:
            migrations.check_version(conn)
        except PgxjobError as exc:
            raise CommandError(f"{exc} (database {db.describe()})") from exc
        yield conn


def _note(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {message}", file=sys.stderr)


# -- commands -------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    db = _resolve(args)
    latest = migrations.latest_version()
    with _connect(db) as conn:
        current = migrations.current_version(conn)
        if args.check:
            if current == latest:
                print(f"pgxjob schema is up to date (version {latest}) in {db.describe()}")
                return EXIT_OK
            raise CommandError(
                f"pgxjob schema is at version {current or 'none'}, this pgxjob needs {latest}"
                f" (database {db.describe()}); run `pgxjob migrate`"
            )
        try:
            applied = migrations.migrate(conn)
        except PgxjobError as exc:
            raise CommandError(f"{exc} (database {db.describe()})") from exc
    if applied:
        versions = ", ".join(str(v) for v in applied)
        print(f"applied pgxjob migrations {versions}; schema version {latest} in {db.describe()}")
    else:
        print(f"pgxjob schema is up to date (version {latest}) in {db.describe()}")
    return EXIT_OK


def cmd_schedule(args: argparse.Namespace) -> int:
    params = _params_json(args.params)
    run_at: dt.datetime | None = None
    run_in: dt.timedelta | None = None
    if args.run_at is not None:
        try:
            run_at, run_in = parse_run_at(args.run_at)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    db = _resolve(args)
    with _migrated(db) as conn:
        try:
            job_id = queries.schedule_relative(
                conn, args.job_type, params, args.group, run_at, run_in
            )
        except PgxjobError as exc:
            raise CommandError(str(exc)) from exc
        except (
            psycopg.errors.InvalidTextRepresentation,
            psycopg.errors.StatementTooComplex,
        ) as exc:
            # Only PARAMS_JSON is cast here; PostgreSQL refused it (bad or too deeply nested).
            reason = (exc.diag.message_primary or str(exc)).strip()
            raise UsageError(f"PARAMS_JSON is not usable JSON: {reason}") from None
    print(job_id)
    _note(args, f"scheduled {args.job_type} job {job_id} in {db.describe()}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    db = _resolve(args)
    with _migrated(db) as conn:
        doc = queries.status(conn, args.failures)
    if args.json:
        doc = {"database": embedded.redact(db.conninfo), "database_source": db.source, **doc}
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    out = sys.stdout
    out.write(
        f"database  {db.describe()}\n"
        f"schema    version {doc['schema_version']}\n"
        f"clock     {_local_time(doc['now'])}\n\n"
    )
    jobs = doc["jobs"]
    if jobs:
        totals = {k: sum(j[k] for j in jobs) for k in ("due", "scheduled", "retrying", "locked")}
        rows = [
            [
                j["group_name"],
                j["job_type"],
                _count(j["due"]),
                _count(j["scheduled"]),
                _count(j["retrying"]),
                _count(j["locked"]),
                _age(j["lag_seconds"]),
            ]
            for j in jobs
        ]
        rows.append(["total", "", *(_count(totals[k]) for k in totals), ""])
        out.write("JOBS\n")
        _table(
            out,
            ["group", "type", "due", "scheduled", "retrying", "locked", "lag"],
            rows,
            right={2, 3, 4, 5, 6},
        )
    else:
        out.write("JOBS\n  no job types registered and no jobs\n")
    out.write("\nWORKERS\n")
    workers = doc["workers"]
    if workers:
        _table(
            out,
            ["id", "group", "state", "heartbeat", "locked", "started"],
            [
                [
                    str(w["worker_id"]),
                    w["group_name"],
                    "alive" if w["alive"] else "dead",
                    f"{_age(w['heartbeat_age_seconds'])} ago",
                    _count(w["locked_jobs"]),
                    _local_time(w["inserted_at"]),
                ]
                for w in workers
            ],
            right={0, 3, 4},
        )
    else:
        out.write("  no workers registered\n")
    if args.failures:
        out.write("\nRECENT FAILURES\n")
        failures = doc["recent_failures"]
        if failures:
            _table(
                out,
                ["finished", "job", "run", "group", "type", "error"],
                [
                    [
                        _local_time(f["finished_at"]),
                        str(f["job_id"]),
                        str(f["run_number"]),
                        f["group_name"],
                        f["job_type"],
                        _one_line(f["error"], 80),
                    ]
                    for f in failures
                ],
                right={1, 2},
            )
        else:
            out.write("  none\n")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    db = _resolve(args)
    with _migrated(db) as conn:
        try:
            runs = queries.recent_job_runs(
                conn,
                args.limit,
                failed_only=args.failed,
                job_type=args.job_type,
                group_name=args.group,
            )
        except PgxjobError as exc:
            raise CommandError(str(exc)) from exc
    if args.json:
        for run in runs:
            record = run._asdict()
            record["params"] = None if run.params is None else json.loads(run.params)
            print(json.dumps(record, default=_json_default))
        return EXIT_OK
    if not runs:
        _note(args, f"no runs match in {db.describe()}")
        return EXIT_OK
    _table(
        sys.stdout,
        ["finished", "job", "run", "group", "type", "duration", "result"],
        [
            [
                _local_time(run.finished_at),
                str(run.job_id),
                str(run.run_number),
                run.group_name,
                run.job_type,
                _duration_text(run.finished_at - run.started_at),
                "ok" if run.error is None else f"error: {_one_line(run.error, 70)}",
            ]
            for run in runs
        ],
        right={1, 2, 5},
    )
    _note(args, f"{len(runs)} runs from {db.describe()}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    db = _resolve(args)
    with _migrated(db) as conn:
        try:
            deleted = queries.prune_job_runs(conn, args.older_than)
        except PgxjobError as exc:
            raise CommandError(str(exc)) from exc
    print(
        f"deleted {deleted} runs that finished more than {_duration_text(args.older_than)} ago"
        f" from {db.describe()}"
    )
    return EXIT_OK


def cmd_embedded(args: argparse.Namespace) -> int:
    path = embedded.data_dir()
    where = _display_path(path)
    try:
        if args.action == "start":
            running = embedded.is_running(path)
            url = embedded.start(path)
            print(url)
            _note(args, f"embedded PostgreSQL in {where} {'runs' if running else 'started'}")
        elif args.action == "stop":
            if embedded.stop(path):
                print(f"stopped the embedded PostgreSQL in {where}")
            else:
                print(f"the embedded PostgreSQL in {where} is not running")
        elif args.action == "status":
            if embedded.is_running(path):
                print(f"running in {where}: {embedded.embedded_url(path)}")
            else:
                print(f"not running (data directory {where})")
                return 3
        else:
            url_or_none = embedded.embedded_url(path)
            if url_or_none is None:
                raise CommandError(
                    f"the embedded PostgreSQL in {where} is not running; "
                    "start it with `pgxjob embedded start`"
                )
            print(url_or_none)
    except embedded.EmbeddedUnavailableError as exc:
        raise CommandError(str(exc)) from exc
    return EXIT_OK


# -- worker ---------------------------------------------------------------------------------------


def load_app(spec: str, conninfo: str) -> Scheduler:
    """Import APP (``module:attribute``) and return its Scheduler.

    The attribute may be a Scheduler, or a callable that returns one; a callable with a
    parameter is called with the database conninfo. ``DATABASE_URL`` is set to the same
    conninfo before the import, so a module that builds its Scheduler at import time from
    ``os.environ["DATABASE_URL"]`` uses the database this command chose.
    """
    from pgxjob.scheduler import Scheduler

    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise UsageError(
            f"APP must be module:attribute, for example myapp.jobs:scheduler; got {spec!r}"
        )
    os.environ["DATABASE_URL"] = conninfo
    # Like gunicorn and uvicorn: modules of the current directory are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(
                f"cannot import APP module {module_name!r}: no module named {exc.name!r}; "
                "run from the directory that contains it or set PYTHONPATH"
            ) from exc
        raise CommandError(f"importing APP module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise CommandError(
            f"importing APP module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(
                f"APP {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not isinstance(target, Scheduler) and callable(target) and not isinstance(target, type):
        try:
            takes_conninfo = _takes_one_argument(target)
            target = target(conninfo) if takes_conninfo else target()
        except (PgxjobError, ValueError, TypeError) as exc:
            raise CommandError(f"APP {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(target, Scheduler):
        raise UsageError(
            f"APP {spec!r} is {_describe_object(target)}, not a pgxjob.Scheduler or a "
            "callable returning one"
        )
    return target


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )


def _describe_object(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return f"a {type(value).__name__}"


class _ProgressLine:
    """The live line on stderr; log records clear it before they print."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.shown = False
        self.last_plain = 0.0

    def show(self, text: str) -> None:
        with self.lock:
            if self.tty:
                self.stream.write(f"\r\033[K{text}")
                self.shown = True
            elif time.monotonic() - self.last_plain >= 5.0:
                self.stream.write(f"{text}\n")
                self.last_plain = time.monotonic()
            self.stream.flush()

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self.shown = False

    def finish(self, text: str) -> None:
        with self.lock:
            if self.tty:
                self.stream.write(f"\r\033[K{text}\n")
            else:
                self.stream.write(f"{text}\n")
            self.shown = False
            self.stream.flush()


class _ProgressAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, progress: _ProgressLine | None) -> None:
        super().__init__(sys.stderr)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if self.progress is not None:
            self.progress.clear()
        super().emit(record)


class _Signals:
    """First SIGINT/SIGTERM: graceful shutdown. Second: stop at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.force = threading.Event()
        self.name = ""

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            self.force.set()
            return
        self.name = name
        self.stop.set()


class _Progress:
    """Reads progress from the database, so it counts the runs of every process on the groups."""

    def __init__(self, db: embedded.Database, groups: Sequence[str], line: _ProgressLine | None):
        self.db = db
        self.groups = set(groups)
        self.line = line
        self.conn: psycopg.Connection[Any] | None = None
        self.started = time.monotonic()
        # The run log's times come from the workers' clocks, and this process's workers share
        # this clock, so its own runs are all counted even if the database clock is skewed.
        self.since = dt.datetime.now(dt.UTC)
        self.samples: list[tuple[float, int]] = []
        self.remaining: int | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(
                self.db.conninfo, autocommit=True, connect_timeout=5, application_name="pgxjob-cli"
            )
        return self.conn

    def start(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._connection()

    def remaining_jobs(self) -> int | None:
        """Jobs left in the served groups (None when the database cannot be read)."""
        try:
            counts = queries.job_counts(self._connection())
        except psycopg.Error as exc:
            logger.debug("progress: cannot read job counts: %s", exc)
            self._reset()
            return None
        self.remaining = sum(
            c.due + c.scheduled + c.retrying + c.locked
            for c in counts
            if c.group_name in self.groups
        )
        return self.remaining

    def stats(self) -> list[queries.JobRunStats]:
        return [
            s
            for s in queries.job_run_stats(self._connection(), self.since)
            if s.group_name in self.groups
        ]

    def update(self, *, final: bool = False) -> None:
        if self.line is None:
            return
        try:
            stats = self.stats()
        except psycopg.Error as exc:
            logger.debug("progress: cannot read run stats: %s", exc)
            self._reset()
            self.line.show("waiting for the database...")
            return
        succeeded = sum(s.succeeded for s in stats)
        failed = sum(s.failed for s in stats)
        retried = sum(s.retried for s in stats)
        done = succeeded + failed
        now = time.monotonic()
        self.samples.append((now, done + retried))
        # Rate over the last few seconds: the all-time average hides a slowdown.
        self.samples = [s for s in self.samples if now - s[0] <= 3.0] or self.samples[-1:]
        first_t, first_n = self.samples[0]
        rate = (done + retried - first_n) / (now - first_t) if now > first_t else 0.0
        remaining = self.remaining if self.remaining is not None else 0
        total = done + remaining
        fraction = done / total if total else 1.0
        width = 24
        filled = int(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        elapsed = _duration_text(dt.timedelta(seconds=now - self.started))
        show = self.line.finish if final else self.line.show
        show(
            f"[{bar}] {fraction:4.0%}  done {done:,}  {rate:,.0f} jobs/s  failed {failed:,}  "
            f"retries {retried:,}  left {remaining:,}  {elapsed}"
        )

    def summary(self, out: IO[str]) -> None:
        try:
            stats = self.stats()
        except psycopg.Error as exc:
            out.write(f"no summary: cannot read the run log ({_first_line(exc)})\n")
            return
        elapsed = time.monotonic() - self.started
        if self.line is not None:
            self.line.clear()
        if not stats:
            out.write("\nno job ran\n")
            return
        rows = [
            [
                s.group_name,
                s.job_type,
                _count(s.runs),
                _count(s.succeeded),
                _count(s.retried),
                _count(s.failed),
                _duration_text(s.avg_duration),
                _duration_text(s.p95_duration),
                _duration_text(s.avg_wait),
            ]
            for s in stats
        ]
        runs = sum(s.runs for s in stats)
        rows.append(
            [
                "total",
                "",
                _count(runs),
                _count(sum(s.succeeded for s in stats)),
                _count(sum(s.retried for s in stats)),
                _count(sum(s.failed for s in stats)),
                "",
                "",
                "",
            ]
        )
        out.write("\n")
        _table(
            out,
            ["group", "type", "runs", "ok", "retried", "failed", "avg run", "p95 run", "avg wait"],
            rows,
            right={2, 3, 4, 5, 6, 7, 8},
        )
        rate = runs / elapsed if elapsed > 0 else 0.0
        out.write(
            f"\n{runs:,} runs in {_duration_text(dt.timedelta(seconds=elapsed))} "
            f"({rate:,.0f} runs/s)\n"
        )
        out.flush()

    def close(self) -> None:
        self._reset()

    def _reset(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


def cmd_worker(args: argparse.Namespace) -> int:
    groups: list[str] = list(dict.fromkeys(args.groups or ["default"]))
    progress_line = _ProgressLine(sys.stderr) if args.progress else None
    level_name = args.log_level or ("debug" if args.verbose else None)
    level_name = level_name or ("warning" if args.progress or args.quiet else "info")
    _configure_logging(getattr(logging, level_name.upper()), progress_line, quiet=args.quiet)

    db = _resolve(args)
    with _connect(db) as conn:
        if args.migrate:
            try:
                applied = migrations.migrate(conn)
            except PgxjobError as exc:
                raise CommandError(f"{exc} (database {db.describe()})") from exc
            if applied:
                logger.info("applied pgxjob migrations %s", applied)
        try:
            migrations.check_version(conn)
        except PgxjobError as exc:
            raise CommandError(f"{exc} (database {db.describe()})") from exc

    scheduler = load_app(args.app, db.conninfo)
    signals = _Signals()
    signals.install()
    workers: list[Worker] = []
    progress: _Progress | None = None
    closed = False
    clean = False
    try:
        try:
            scheduler.wait_ready()
        except NotReadyError as exc:
            raise CommandError(str(exc)) from exc
        if args.progress or args.until_empty:
            progress = _Progress(db, groups, progress_line)
            progress.start()
        for group in groups:
            try:
                worker = scheduler.start_worker(
                    group_name=group,
                    max_concurrent_jobs=args.concurrency,
                    max_prefetched_jobs=args.prefetch,
                    poll_interval=args.poll_interval,
                    max_buffered_job_results=args.max_buffered_results,
                    max_buffered_job_result_age=args.max_buffered_result_age,
                    should_log_job_run=_log_final_runs() if args.log_final_runs_only else None,
                    min_heartbeat_delay=args.heartbeat,
                    heartbeat_delay_jitter=args.heartbeat_jitter,
                    worker_dead_without_heartbeat=args.dead_after,
                    listen=args.listen,
                )
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
            workers.append(worker)
        for worker in workers:
            while not worker.startup_complete.wait(0.2):
                if signals.stop.is_set():
                    break
            if worker.startup_complete.is_set():
                logger.info(
                    "worker %s serving group %r (concurrency %d, %s) on %s",
                    worker.id,
                    worker.group_name,
                    args.concurrency,
                    "LISTEN" if args.listen else "poll only",
                    db.describe(),
                )
        if not logger.isEnabledFor(logging.INFO):
            _note(args, f"serving {', '.join(groups)} on {db.describe()}")
        _run_until_stopped(args, signals, progress)
        if signals.name:
            logger.info("%s received: shutting down (send it again to stop at once)", signals.name)
        clean = _shutdown(args, db, scheduler, workers, signals)
        closed = True
    finally:
        if not closed:
            scheduler.close(timeout=5.0)
        if progress is not None:
            if args.progress and workers:
                progress.remaining_jobs()
                progress.update(final=True)
                progress.summary(sys.stdout)
            progress.close()
    if not clean:
        logger.warning("shutdown did not finish in time: unfinished jobs run again elsewhere")
        return EXIT_RUNTIME
    return EXIT_OK


def _log_final_runs() -> Any:
    from pgxjob.jobs import log_final_job_runs

    return log_final_job_runs


def _run_until_stopped(
    args: argparse.Namespace, signals: _Signals, progress: _Progress | None
) -> None:
    empty_checks = 0
    while not signals.stop.wait(0.5 if progress is not None else 3600):
        if progress is None:
            continue
        remaining = progress.remaining_jobs()
        progress.update()
        if args.until_empty and remaining == 0:
            # A job stays locked until its result is recorded, and a handler's follow-up jobs
            # are committed before that, so zero means nothing is left. Two readings in a row
            # guard against jobs another process schedules at that moment.
            empty_checks += 1
            if empty_checks >= 2:
                return
        else:
            empty_checks = 0


def _shutdown(
    args: argparse.Namespace,
    db: embedded.Database,
    scheduler: Scheduler,
    workers: Sequence[Worker],
    signals: _Signals,
) -> bool:
    # shutdown() returns at once when given a timeout, so all workers stop in parallel; short
    # waits keep the main thread responsive to a second signal.
    deadline = None if args.shutdown_timeout is None else time.monotonic() + args.shutdown_timeout
    pending = list(workers)
    for worker in pending:
        worker.shutdown(0)
    while pending:
        if signals.force.is_set():
            _force_exit(db, pending)
        pending = [w for w in pending if not w.shutdown(0.1)]
        if deadline is not None and time.monotonic() >= deadline:
            break
    clean = not pending and scheduler.close(timeout=5.0)
    return clean


def _force_exit(db: embedded.Database, workers: Sequence[Worker]) -> NoReturn:
    logger.warning(
        "second signal: stopping now; the %d unfinished worker(s) are unregistered so their "
        "jobs run again elsewhere",
        len(workers),
    )
    with (
        contextlib.suppress(Exception),
        psycopg.connect(db.conninfo, autocommit=True, connect_timeout=3) as conn,
    ):
        for worker in workers:
            if worker.id is not None:
                queries.unregister_worker(conn, worker.id)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(EXIT_RUNTIME)


def _configure_logging(level: int, progress: _ProgressLine | None, *, quiet: bool) -> None:
    handler = _ProgressAwareHandler(progress)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The command line's own messages (startup, shutdown) stay visible above the progress line.
    logger.setLevel(level if quiet else min(level, logging.INFO))


# -- output helpers -------------------------------------------------------------------------------


def _table(
    out: IO[str], header: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]
) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(parts)).rstrip() + "\n"

    out.write(line(header))
    for row in rows:
        out.write(line(row))


def _count(value: int) -> str:
    return f"{value:,}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return _duration_text(dt.timedelta(seconds=float(seconds)))


def _duration_text(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total < 1:
        return f"{sign}{total * 1000:.0f}ms"
    if total < 60:
        return f"{sign}{total:.1f}s"
    minutes, secs = divmod(int(total), 60)
    if minutes < 60:
        return f"{sign}{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{sign}{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{sign}{days}d{hours:02d}h" if hours else f"{sign}{days}d"


def _local_time(value: str | dt.datetime | None) -> str:
    if value is None:
        return "-"
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text: str | None, limit: int) -> str:
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _json_default(value: object) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _display_path(path: os.PathLike[str] | str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- entry point ----------------------------------------------------------------------------------

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "worker": cmd_worker,
    "schedule": cmd_schedule,
    "status": cmd_status,
    "runs": cmd_runs,
    "prune": cmd_prune,
    "embedded": cmd_embedded,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pgxjob command line; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "worker":
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        return _fail(args, exc, EXIT_USAGE)
    except (CommandError, PgxjobError) as exc:
        return _fail(args, exc, EXIT_RUNTIME)
    except psycopg.Error as exc:
        return _fail(args, exc, EXIT_RUNTIME, prefix="database error: ")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _fail(args, exc, EXIT_RUNTIME, prefix=f"unexpected {type(exc).__name__}: ")


def _fail(args: argparse.Namespace, exc: BaseException, code: int, *, prefix: str = "") -> int:
    if args.verbose:
        traceback.print_exception(exc)
    message = " ".join(str(exc).split()) or type(exc).__name__
    # Messages raised by the SQL functions start with "pgxjob: " too.
    message = message.removeprefix(f"{PROG}: ")
    print(f"{PROG}: error: {prefix}{message}", file=sys.stderr)
    return code
