"""The ``pgxjob`` command line: migrate, worker, schedule, status, runs, prune, dashboard, embedded.

Every command picks its database the same way: ``--database-url``, else ``DATABASE_URL``, else
the embedded PostgreSQL in ``.pgxjob/pg`` (see :mod:`pgxjob.embedded`). Exit codes: 0 success,
1 the command failed at run time (database unreachable or not migrated, unknown job type, ...),
2 the command line itself is wrong (bad JSON, bad time, an APP that is not a Scheduler, ...).
Errors are one line on stderr; ``--verbose`` adds the traceback.

Modules: :mod:`~pgxjob.cli.parsing` (values and the argument parser), :mod:`~pgxjob.cli.commands`
(the one-shot commands), :mod:`~pgxjob.cli.worker` (the worker command), :mod:`~pgxjob.cli.output`
(progress and tables) and :mod:`~pgxjob.cli.common` (exit codes, errors, the database).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

import psycopg

from pgxjob.cli.commands import (
    cmd_cancel,
    cmd_embedded,
    cmd_migrate,
    cmd_periodic,
    cmd_prune,
    cmd_runs,
    cmd_schedule,
    cmd_status,
)
from pgxjob.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_RUNTIME,
    EXIT_USAGE,
    PROG,
    CommandError,
    UsageError,
)
from pgxjob.cli.dashboard import cmd_dashboard
from pgxjob.cli.parsing import build_parser, parse_duration, parse_run_at
from pgxjob.cli.worker import cmd_worker
from pgxjob.errors import PgxjobError

__all__ = ["main", "parse_duration", "parse_run_at"]


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "worker": cmd_worker,
    "schedule": cmd_schedule,
    "cancel": cmd_cancel,
    "periodic": cmd_periodic,
    "status": cmd_status,
    "runs": cmd_runs,
    "prune": cmd_prune,
    "dashboard": cmd_dashboard,
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
