"""A TCP proxy in front of PostgreSQL that can simulate an outage without touching the server.

The server is shared with other test runs, so it is never stopped: instead the clients under
test connect through this proxy, which can drop every connection it carries (as a server
restart does) and refuse new ones until it is told to resume.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator

from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["FaultProxy", "fault_proxy"]


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close with a RST, as a crashed or restarting server does.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server of ``upstream_conninfo``."""

    def __init__(self, upstream_conninfo: str) -> None:
        params = conninfo_to_dict(upstream_conninfo)
        self._upstream_conninfo = upstream_conninfo
        host = str(params.get("host") or "127.0.0.1")
        port = int(params.get("port") or 5432)
        # A host that is a directory is a Unix socket directory (the embedded server has no TCP
        # port): forward to its socket file instead.
        self._upstream_unix = (
            os.path.join(host, f".s.PGSQL.{port}") if host.startswith("/") else None
        )
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: dict[tuple[socket.socket, socket.socket], threading.Thread] = {}
        self._refusing = False
        self._closed = False
        self.accepted = 0
        """Connections forwarded so far."""
        self.refused = 0
        """Connection attempts refused so far."""
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def conninfo(self) -> str:
        """The upstream conninfo with host and port pointing at the proxy."""
        return make_conninfo(self._upstream_conninfo, host="127.0.0.1", port=str(self.port))

    @property
    def active(self) -> int:
        """Connections currently forwarded."""
        with self._lock:
            return len(self._pairs)

    def refuse(self) -> None:
        """Reset every new connection from now on."""
        with self._lock:
            self._refusing = True

    def drop_all(self) -> int:
        """Reset every forwarded connection, on both sides; return how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, {}
        # Each pump thread closes its own sockets (closing a descriptor that another thread is
        # selecting on could hand the number to a new socket); shutdown() wakes it up.
        for client, server in pairs:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in pairs.values():
            thread.join(5.0)
        return len(pairs)

    def outage(self) -> int:
        """Start an outage: refuse new connections and drop the current ones."""
        self.refuse()
        return self.drop_all()

    def resume(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        # shutdown() wakes the accept() of the other thread; close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)
        self._listener.close()
        self.drop_all()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    _reset(client)
                    return
                refusing = self._refusing
            if refusing:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = self._connect_upstream()
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            pair = (client, server)
            thread = threading.Thread(
                target=self._pump, args=(pair,), name="faultproxy-pump", daemon=True
            )
            with self._lock:
                # An outage that began while we connected upstream covers this connection too.
                admitted = not (self._refusing or self._closed)
                if admitted:
                    self._pairs[pair] = thread
                    self.accepted += 1
            if admitted:
                thread.start()
            else:
                self.refused += 1
                _reset(client)
                _reset(server)

    def _connect_upstream(self) -> socket.socket:
        if self._upstream_unix is None:
            return socket.create_connection(self._upstream, timeout=5.0)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(self._upstream_unix)
        except OSError:
            sock.close()
            raise
        return sock

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, server = pair
        peer = {client: server, server: client}
        try:
            while True:
                with self._lock:
                    if pair not in self._pairs:
                        return
                readable, _, _ = select.select([client, server], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._pairs.pop(pair, None)
            _reset(client)
            _reset(server)


@contextlib.contextmanager
def fault_proxy(upstream_conninfo: str) -> Iterator[FaultProxy]:
    """A FaultProxy that is closed afterwards."""
    proxy = FaultProxy(upstream_conninfo)
    try:
        yield proxy
    finally:
        proxy.close()
