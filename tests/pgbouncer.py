"""A real PgBouncer in transaction pooling mode, in front of the test server, for the tests.

It runs the distribution's ``pgbouncer`` binary (Debian: ``apt-get install pgbouncer``, which
.ci/run does) with a configuration of its own in a temporary directory, on a free port. PgBouncer
refuses to run as root: as root it is started with ``-u postgres`` (or as the owner of the
server's Unix socket directory) and the directory is handed to that user.

The pool is made to expose any reliance on session state: a few server connections per
database and user, opened in advance (``min_pool_size``) and handed out in turn
(``server_round_robin``), so that consecutive transactions of one client land on different
server sessions. A prepared statement, a session-level SET, a session advisory lock or a LISTEN
that a client expects to find in its next transaction is then gone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

POOL_SIZE = 3


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """One pgbouncer process in transaction mode in front of the server of ``server_conninfo``."""

    def __init__(self, server_conninfo: str, *, pool_size: int = POOL_SIZE) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed: apt-get install pgbouncer")
        self.binary = binary
        self.server = conninfo_to_dict(server_conninfo)
        self.pool_size = pool_size
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgxjob-pgbouncer-"))
        self.as_root = os.geteuid() == 0
        # As root, PgBouncer runs as postgres; a server on a Unix socket in a directory only its
        # owner may enter (the embedded wheel's) is reached as that owner instead.
        self.run_as = "postgres"
        host = str(self.server.get("host") or "")
        if host.startswith("/") and os.path.isdir(host):
            self.run_as = pwd.getpwuid(os.stat(host).st_uid).pw_name
        self.users: set[str] = {str(self.server.get("user") or os.environ.get("USER", "root"))}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> None:
        host = str(self.server.get("host") or "127.0.0.1")
        port = str(self.server.get("port") or "5432")
        target = f"host={host} port={port}"
        if self.server.get("password"):
            target += f" password={self.server['password']}"
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            # Any database name the client asks for, on the test server.
            f"* = {target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            f"min_pool_size = {self.pool_size}\n"
            "server_round_robin = 1\n"
            "max_client_conn = 500\n"
            "query_wait_timeout = 60\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        self._write_users()
        if self.as_root:
            for path in (self.dir, *self.dir.iterdir()):
                shutil.chown(path, self.run_as)

    def _write_users(self) -> None:
        # trust: no password is checked, but PgBouncer still admits only the users listed.
        path = self.dir / "userlist.txt"
        path.write_text("".join(f'"{user}" ""\n' for user in sorted(self.users)))
        if self.as_root:
            shutil.chown(path, self.run_as)

    def add_user(self, name: str) -> None:
        """Admit another role (trust), reloading the running PgBouncer."""
        self.users.add(name)
        self._write_users()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)

    def start(self) -> None:
        self._write_config()
        command = [self.binary, str(self.dir / "pgbouncer.ini")]
        if self.as_root:
            command[1:1] = ["-u", self.run_as]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}: {self.log}")
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def conninfo(self, dbname: str, *, user: str | None = None) -> str:
        """A conninfo for database dbname through this PgBouncer."""
        params: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "dbname": dbname,
            "user": user or self.server.get("user") or None,
        }
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})

    def through(self, server_conninfo: str) -> str:
        """The same database and user as server_conninfo, reached through this PgBouncer."""
        params = conninfo_to_dict(server_conninfo)
        return self.conninfo(str(params["dbname"]), user=str(params.get("user") or "") or None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def pgbouncer(server_conninfo: str, *, pool_size: int = POOL_SIZE) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(server_conninfo, pool_size=pool_size)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
