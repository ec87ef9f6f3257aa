"""The dashboard command: check the database, then serve the dashboard with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from pathlib import Path

from pgxjob.cli.common import EXIT_OK, CommandError, UsageError, migrated, note, resolve, schema_of

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_local(bind: str) -> bool:
    """Whether only this machine can reach an address: loopback, or a name for it."""
    if bind.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The token in a token file: its first line, at least 16 characters."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except OSError as exc:
        raise UsageError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise UsageError(
            f"the token in {path} is {len(token)} characters long; use at least 16, for example "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > " + path
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"--token-file {path} can be read by other users; chmod 600 {path} and try again"
        )
    return token


def base_path(text: str | None) -> str:
    """--base-path as /a/b without a trailing slash; empty for the root."""
    value = (text or "").strip()
    if not value or value == "/":
        return ""
    if not value.startswith("/") or "//" in value or any(c in value for c in "?#\\ "):
        raise UsageError(f"--base-path must be a path such as /jobs, got {text!r}")
    return value.rstrip("/")


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import RedirectResponse
        from starlette.routing import Mount, Route

        from pgxjob.dashboard import create_app
    except ImportError as exc:
        raise CommandError(
            f"the dashboard needs the dashboard extra ({exc.name} is missing): "
            "pip install 'pgxjob[dashboard]'"
        ) from None

    token = read_token(args.token_file) if args.token_file else None
    if token is None and not is_local(args.bind):
        raise UsageError(
            f"refusing to listen on {args.bind} without --token-file: anyone who reaches it "
            "could read job params and cancel jobs; give a token file, or bind to 127.0.0.1 "
            "behind a proxy that authenticates"
        )
    prefix = base_path(args.base_path)
    db = resolve(args)
    schema = schema_of(args)
    with migrated(db, schema):
        pass

    dashboard = create_app(db.conninfo, schema=schema, read_only=args.read_only, token=token)
    app = dashboard
    if prefix:

        async def to_prefix(request: object) -> RedirectResponse:
            return RedirectResponse(prefix + "/", status_code=307)

        app = Starlette(routes=[Route("/", to_prefix), Mount(prefix, app=dashboard)])
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    note(
        args,
        f"dashboard on http://{host}:{args.port}{prefix}/ for {db.describe()}"
        + (" (read-only)" if args.read_only else "")
        + ("" if token is None else " (token required)"),
    )
    try:
        uvicorn.run(
            app,
            host=args.bind,
            port=args.port,
            log_level="debug" if args.verbose else "warning",
            server_header=False,
            access_log=bool(args.verbose),
        )
    finally:
        dashboard.state.dashboard.close()
    return EXIT_OK
