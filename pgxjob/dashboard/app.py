"""The dashboard's ASGI application: pages, actions, login and /metrics, on Starlette and Jinja2."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgxjob import queries
from pgxjob.embedded import redact
from pgxjob.errors import PgxjobError
from pgxjob.prometheus import DatabaseCollector

__all__ = ["create_app", "describe_database"]

logger = logging.getLogger(__name__)

_STATIC = Path(__file__).resolve().parent / "static"
HTMX = "htmx-2.0.11.min.js"

# Scripts only from the dashboard itself, no inline script or style, no framing, forms post only
# back to it: a value that escaped escaping could still not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]

_CSRF_COOKIE = "pgxjob_dashboard_csrf"
_SESSION_COOKIE = "pgxjob_dashboard_session"
_OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "stale")
_PRUNE_CHOICES = {
    "1h": dt.timedelta(hours=1),
    "1d": dt.timedelta(days=1),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}
_NOTICES = {
    "cancelled": "The job was cancelled.",
    "cancel_requested": "The job is running: its worker was asked to stop it.",
    "not_found": "The job does not exist any more (it finished, or was cancelled).",
    "due": "The job is due now: the next fetch of its group runs it.",
    "already_due": "The job was due already.",
    "running": "A worker holds the job: nothing changed.",
    "retried": "A new job was scheduled from the failed run.",
    "paused": "The group is paused: its workers claim no new job.",
    "already_paused": "The group was paused already.",
    "resumed": "The group is running again.",
    "not_paused": "The group was not paused.",
    "pruned": "The run log was pruned.",
    "logged_in": "Signed in.",
}
_PAGE_SIZE = 50


def describe_database(conninfo: str) -> str:
    """user@host:port/dbname of a conninfo, never its password."""
    return redact(conninfo)


class _Dashboard:
    """The state behind the routes: the pool, the templates, the token and the flags."""

    def __init__(
        self,
        database: str | ConnectionPool[Any],
        *,
        schema: str,
        read_only: bool,
        token: str | None,
        refresh_seconds: float,
    ) -> None:
        if isinstance(database, str):
            self.pool: ConnectionPool[Any] = ConnectionPool(
                database,
                min_size=1,
                max_size=4,
                open=False,
                # A page waits at most this long for the database, then says it is down.
                timeout=10,
                kwargs={"autocommit": True, "application_name": "pgxjob-dashboard"},
                name="pgxjob-dashboard",
            )
            self.own_pool = True
            self.database = describe_database(database)
        else:
            self.pool = database
            self.own_pool = False
            conninfo = database.conninfo
            self.database = describe_database(conninfo if isinstance(conninfo, str) else "")
        self.schema = schema
        self.read_only = read_only
        self.token = token
        self.refresh_seconds = refresh_seconds
        self._opened = False
        self._lock = threading.Lock()
        self.templates = Environment(
            loader=PackageLoader("pgxjob.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            when=_when, age=_age, seconds=_seconds_text, pretty_json=_pretty_json
        )
        self.templates.globals.update(htmx=HTMX, notices=_NOTICES, outcomes=_OUTCOMES)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DatabaseCollector(self.connection))

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self.own_pool and not self._opened:
            with self._lock:
                if not self._opened:
                    self.pool.open(wait=False)
                    self._opened = True
        with self.pool.connection() as conn, queries.in_schema(conn, self.schema):
            yield conn

    def close(self) -> None:
        if self.own_pool and self._opened:
            self.pool.close()
            self._opened = False

    # -- sessions and CSRF ------------------------------------------------------------------

    def session_value(self) -> str:
        assert self.token is not None
        key = self.token.encode()
        return hmac.new(key, b"pgxjob-dashboard-session", hashlib.sha256).hexdigest()

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and hmac.compare_digest(
            header[7:].strip().encode(), self.token.encode()
        ):
            return True
        cookie = request.cookies.get(_SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        csrf = request.cookies.get(_CSRF_COOKIE) or ""
        fresh = len(csrf) < 32
        if fresh:
            csrf = secrets.token_urlsafe(32)
        base = _base(request)
        notice = request.query_params.get("notice")
        html = self.templates.get_template(template).render(
            request=request,
            base=base,
            csrf=csrf,
            read_only=self.read_only,
            database=self.database,
            signed_in=self.token is not None,
            notice=_NOTICES.get(notice or ""),
            refresh_ms=int(self.refresh_seconds * 1000),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        if fresh:
            response.set_cookie(
                _CSRF_COOKIE, csrf, httponly=True, samesite="strict", path=base + "/"
            )
        return response


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _redirect(request: Request, path: str, notice: str | None = None) -> RedirectResponse:
    target = _base(request) + path
    if notice:
        target += ("&" if "?" in target else "?") + "notice=" + notice
    return RedirectResponse(target, status_code=303)


# -- template filters ---------------------------------------------------------------------------


def _when(value: dt.datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        when = value
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _seconds_text(total: float) -> str:
    total = int(total)
    if total < 0:
        return "-" + _seconds_text(-total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def _age(value: dt.timedelta | None) -> str:
    if value is None:
        return ""
    return _seconds_text(value.total_seconds())


def _pretty_json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


# -- page data ------------------------------------------------------------------------------------

_SPARK_WIDTH = 120
_SPARK_HEIGHT = 24


def _spark(values: list[float], top: float | None = None) -> str:
    """SVG polyline points for a sparkline of values (left: oldest)."""
    high = top if top is not None else max(values, default=0.0)
    step = _SPARK_WIDTH / max(len(values) - 1, 1)
    points = []
    for i, value in enumerate(values):
        y = _SPARK_HEIGHT - (value / high * (_SPARK_HEIGHT - 2) if high > 0 else 0) - 1
        points.append(f"{i * step:.1f},{y:.1f}")
    return " ".join(points)


def _overview(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    groups = queries.group_overview(conn)
    jobs = queries.job_overview(conn)
    history = queries.run_history(conn, dt.timedelta(hours=1), dt.timedelta(minutes=1))
    periodic = queries.periodic_job_status(conn)
    now = conn.execute("select now()").fetchone()
    assert now is not None
    start = now[0] - dt.timedelta(hours=1)
    per_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in history:
        per_key.setdefault((row["group_name"], row["job_type"]), []).append(row)
    for job in jobs:
        runs = per_key.get((job["group_name"], job["job_type"]), [])
        done = [0.0] * 60
        failed = [0.0] * 60
        for row in runs:
            index = min(max(int((row["bucket_at"] - start).total_seconds() // 60), 0), 59)
            total = row["succeeded"] + row["failed"] + row["retried"] + row["cancelled"]
            done[index] += total
            failed[index] += row["failed"] + row["retried"]
        job["succeeded_1h"] = sum(row["succeeded"] for row in runs)
        job["failed_1h"] = sum(row["failed"] for row in runs)
        job["retried_1h"] = sum(row["retried"] for row in runs)
        job["throughput_points"] = _spark(done)
        job["throughput_max"] = int(max(done, default=0))
        rates = [f / d if d else 0.0 for f, d in zip(failed, done, strict=True)]
        job["failure_points"] = _spark(rates, 1.0)
        total_done = sum(done)
        job["failure_rate"] = sum(failed) / total_done if total_done else None
    return {"groups": groups, "jobs": jobs, "periodic": periodic, "now": now[0]}


def _parse_time(text: str | None, name: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise _BadRequest(
            f"{name} must be a time such as 2030-01-31T09:00 (UTC unless it has an offset)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _parse_cursor(text: str | None) -> tuple[dt.datetime, int, int] | None:
    if not text:
        return None
    try:
        at, job_id, run_number = text.split("|")
        when = dt.datetime.fromisoformat(at)
        return when, int(job_id), int(run_number)
    except ValueError:
        raise _BadRequest("the page cursor is not valid: start again from the first page") from None


def _cursor(row: dict[str, Any]) -> str:
    return f"{row['finished_at'].isoformat()}|{row['job_id']}|{row['run_number']}"


class _BadRequest(Exception):
    """A query parameter or form field is wrong: a 400 page saying which and how."""


# -- the application ------------------------------------------------------------------------------


def create_app(
    database: str | ConnectionPool[Any],
    *,
    schema: str = "public",
    read_only: bool = False,
    token: str | None = None,
    refresh_seconds: float = 2.0,
) -> Starlette:
    """The dashboard as an ASGI application, to serve or mount under a path of another app.

    ``database`` is a conninfo (the dashboard opens a small pool of its own on first use) or a
    ``psycopg_pool.ConnectionPool`` whose connections are in autocommit mode. ``schema`` is the
    schema pgxjob is migrated into. ``read_only`` leaves out every action. With ``token``, every
    page, action and ``/metrics`` needs it: a browser signs in once at ``/login`` (a cookie),
    a scraper sends ``Authorization: Bearer <token>``. Mounted in a larger application, leave
    ``token`` out and put the mount behind that application's own authentication.

    Every action is a POST carrying a CSRF token and calls one ``pgxjob_*`` SQL function.
    """
    if token is not None and len(token) < 16:
        raise ValueError("the dashboard token must be at least 16 characters long")
    if refresh_seconds <= 0:
        raise ValueError(f"refresh_seconds must be positive, got {refresh_seconds!r}")
    state = _Dashboard(
        database,
        schema=schema,
        read_only=read_only,
        token=token,
        refresh_seconds=refresh_seconds,
    )

    def page(
        handler: Callable[[Request], Response],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A GET route: authorized, database errors shown as a page. Runs on a thread."""

        async def endpoint(request: Request) -> Response:
            if not state.authorized(request):
                if request.url.path.endswith("/metrics") or "hx-request" in request.headers:
                    return PlainTextResponse("sign in first", status_code=401)
                return _redirect(request, "/login")
            return await _threaded(request, handler)

        return endpoint

    def action(
        handler: Callable[[Request, dict[str, str]], Response],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST route: refused read-only, without the token or without the CSRF token."""

        async def endpoint(request: Request) -> Response:
            if state.read_only:
                return PlainTextResponse("the dashboard is read-only", status_code=403)
            if not state.authorized(request):
                return PlainTextResponse("sign in first", status_code=403)
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            if not _csrf_ok(request, form):
                return PlainTextResponse(
                    "missing or wrong CSRF token: reload the page and try again", status_code=403
                )
            return await _threaded(request, lambda r: handler(r, form))

        return endpoint

    async def _threaded(request: Request, handler: Callable[[Request], Response]) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(handler, request)
        except _BadRequest as exc:
            return state.render(request, "error.html", 400, title="Bad request", message=str(exc))
        except PgxjobError as exc:
            return state.render(request, "error.html", 400, title="Refused", message=str(exc))
        except psycopg.Error as exc:
            logger.warning("pgxjob dashboard: database error: %s", exc)
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return state.render(
                request,
                "error.html",
                503,
                title="Database error",
                message=f"{message} (is the database up and migrated with pgxjob migrate?)",
            )

    def overview(request: Request) -> Response:
        with state.connection() as conn:
            data = _overview(conn)
        return state.render(request, "overview.html", page="overview", **data)

    def overview_live(request: Request) -> Response:
        with state.connection() as conn:
            data = _overview(conn)
        return state.render(request, "_overview_live.html", **data)

    def workers(request: Request) -> Response:
        with state.connection() as conn:
            rows = queries.worker_overview(conn)
        return state.render(request, "workers.html", page="workers", workers=rows)

    def runs(request: Request) -> Response:
        params = request.query_params
        filters = {
            "group": params.get("group") or "",
            "type": params.get("type") or "",
            "outcome": params.get("outcome") or "",
            "since": params.get("since") or "",
            "until": params.get("until") or "",
        }
        if filters["outcome"] and filters["outcome"] not in _OUTCOMES:
            raise _BadRequest(f"outcome must be one of {', '.join(_OUTCOMES)}")
        after = _parse_cursor(params.get("after"))
        with state.connection() as conn:
            rows = queries.job_runs_page(
                conn,
                _PAGE_SIZE + 1,
                group_name=filters["group"] or None,
                job_type=filters["type"] or None,
                outcome=filters["outcome"] or None,
                since=_parse_time(filters["since"], "since"),
                until=_parse_time(filters["until"], "until"),
                after=after,
            )
            groups = [g["group_name"] for g in queries.group_overview(conn)]
            types = sorted({j["job_type"] for j in queries.job_overview(conn)})
        more = len(rows) > _PAGE_SIZE
        rows = rows[:_PAGE_SIZE]
        next_query = None
        if more:
            next_query = {k: v for k, v in filters.items() if v}
            next_query["after"] = _cursor(rows[-1])
        return state.render(
            request,
            "runs.html",
            page="runs",
            runs=rows,
            filters=filters,
            next_query=next_query,
            first_page=after is None,
            first_query={k: v for k, v in filters.items() if v},
            groups=groups,
            types=types,
        )

    def job(request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        with state.connection() as conn:
            detail = queries.job_detail(conn, job_id)
            periodic = [p for p in queries.periodic_job_status(conn) if p.last_job_id == job_id]
        if detail is None:
            return state.render(
                request,
                "error.html",
                404,
                title="No such job",
                message=f"Job {job_id} is not waiting or running, and no run of it is logged.",
            )
        return state.render(
            request, "job.html", page="job", job_id=job_id, detail=detail, periodic=periodic
        )

    def cancel(request: Request, form: dict[str, str]) -> Response:
        job_id = int(request.path_params["job_id"])
        with state.connection() as conn:
            outcome = queries.cancel_job(conn, job_id)
        return _redirect(request, f"/jobs/{job_id}", outcome)

    def run_now(request: Request, form: dict[str, str]) -> Response:
        job_id = int(request.path_params["job_id"])
        with state.connection() as conn:
            outcome = queries.run_job_now(conn, job_id)
        return _redirect(request, f"/jobs/{job_id}", outcome)

    def retry(request: Request, form: dict[str, str]) -> Response:
        job_id = int(request.path_params["job_id"])
        run_number = int(request.path_params["run_number"])
        with state.connection() as conn:
            new_id = queries.retry_job_run(conn, job_id, run_number)
        return _redirect(request, f"/jobs/{new_id}", "retried")

    def pause(request: Request, form: dict[str, str]) -> Response:
        with state.connection() as conn:
            changed = queries.pause_group(conn, request.path_params["group"])
        return _redirect(request, "/", "paused" if changed else "already_paused")

    def resume(request: Request, form: dict[str, str]) -> Response:
        with state.connection() as conn:
            changed = queries.resume_group(conn, request.path_params["group"])
        return _redirect(request, "/", "resumed" if changed else "not_paused")

    def prune(request: Request, form: dict[str, str]) -> Response:
        older_than = _PRUNE_CHOICES.get(form.get("older_than", ""))
        if older_than is None:
            raise _BadRequest(f"older_than must be one of {', '.join(_PRUNE_CHOICES)}")
        with state.connection() as conn:
            queries.prune_job_runs(conn, older_than)
        return _redirect(request, "/runs", "pruned")

    def metrics(request: Request) -> Response:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    async def login(request: Request) -> Response:
        if state.token is None:
            return _redirect(request, "/")
        if request.method == "GET":
            return state.render(request, "login.html", page="login", failed=False)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if not _csrf_ok(request, form):
            return PlainTextResponse(
                "missing or wrong CSRF token: reload the page and try again", status_code=403
            )
        given = form.get("token", "")
        if not hmac.compare_digest(given.encode(), state.token.encode()):
            return state.render(request, "login.html", 403, page="login", failed=True)
        response = _redirect(request, "/", "logged_in")
        response.set_cookie(
            _SESSION_COOKIE,
            state.session_value(),
            httponly=True,
            samesite="strict",
            path=_base(request) + "/",
        )
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    routes = [
        Route("/", page(overview), name="overview"),
        Route("/fragments/overview", page(overview_live)),
        Route("/workers", page(workers)),
        Route("/runs", page(runs)),
        Route("/jobs/{job_id:int}", page(job)),
        Route("/jobs/{job_id:int}/cancel", action(cancel), methods=["POST"]),
        Route("/jobs/{job_id:int}/run-now", action(run_now), methods=["POST"]),
        Route("/jobs/{job_id:int}/runs/{run_number:int}/retry", action(retry), methods=["POST"]),
        Route("/groups/{group:path}/pause", action(pause), methods=["POST"]),
        Route("/groups/{group:path}/resume", action(resume), methods=["POST"]),
        Route("/runs/prune", action(prune), methods=["POST"]),
        Route("/metrics", page(metrics)),
        Route("/login", login, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = state
    app.add_middleware(_SecurityHeaders)
    return app


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(_CSRF_COOKIE, "")
    sent = form.get("csrf", "")
    if len(cookie) < 32 or not hmac.compare_digest(cookie.encode(), sent.encode()):
        return False
    # A browser says where a request comes from; another site's form is refused even if it
    # somehow had the token.
    site = request.headers.get("sec-fetch-site")
    return site in (None, "same-origin", "none")


class _SecurityHeaders:
    """Adds the Content-Security-Policy and the other protective headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in _SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k not in names]
                message["headers"] = headers + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)
