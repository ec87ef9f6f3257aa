"""The dashboard's HTTP surface against a real database: pages, escaping, headers, actions with
CSRF and token, read-only mode, keyset paging of the run log, pausing a group a worker serves,
and the `pgxjob dashboard` command's refusals."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

pytest.importorskip("starlette")
from starlette.testclient import TestClient

import pgxjob
from pgxjob.dashboard import CONTENT_SECURITY_POLICY, create_app
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
ESCAPED = "&lt;script&gt;window.__xss=1&lt;/script&gt;"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database("pgxjob_dash") as conninfo:
        migrate(conninfo)
        yield conninfo


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def execute(url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params)


def scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return query(url, sql, params)[0][0]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


_APPS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_apps() -> Iterator[None]:
    yield
    while _APPS:
        _APPS.pop().state.dashboard.close()


def make_app(database: str, **options: Any) -> Any:
    """A dashboard app whose connection pool is closed after the test."""
    app = create_app(database, **options)
    _APPS.append(app)
    return app


def client(app: Any) -> TestClient:
    # Redirects are checked by hand: an action answers 303 to the page it changed.
    return TestClient(app, follow_redirects=False)


def csrf_of(c: TestClient, path: str = "/") -> str:
    page = c.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, "the page has a form with a CSRF token"
    return match[1]


def failed_job(url: str, job_type: str, params: str, error: str, output: str | None) -> int:
    """A job whose one run failed for good, logged as a worker would have logged it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pgxjob_register_job_type(%s, 'default')", (job_type,))
        job_id = conn.execute("select pgxjob_schedule(%s, %s::json)", (job_type, params)).fetchone()
        assert job_id is not None
        worker = conn.execute(
            "select pgxjob_register_worker('default', interval '1 minute')"
        ).fetchone()
        assert worker is not None
        conn.execute(
            "update pgxjob_asap_jobs set worker_id = %s where id = %s", (worker[0], job_id[0])
        )
        now = dt.datetime.now(dt.UTC)
        conn.execute(
            "select pgxjob_record_job_results(%s, array[%s::bigint], array[0],"
            " array[%s::timestamptz], array[%s::timestamptz], array[%s::text],"
            " array[null::timestamptz], array[null::int], array[null::interval], array[true],"
            " array[%s::json])",
            (worker[0], job_id[0], now, now, error, output),
        )
        conn.execute("select pgxjob_unregister_worker(%s)", (worker[0],))
        return int(job_id[0])


def test_every_page_renders_and_escapes_what_jobs_control(url: str) -> None:
    job_type = unique("dash_xss")
    job_id = failed_job(
        url,
        job_type,
        json.dumps({"name": XSS}),
        f"RuntimeError: {XSS}\nTraceback (most recent call last):\n  {XSS}",
        json.dumps({"html": XSS}),
    )
    waiting = scalar(
        url,
        "select pgxjob_schedule(%s, %s::json)",
        (job_type, json.dumps([XSS])),
    )
    c = client(make_app(url))
    for path in (
        "/",
        "/fragments/overview",
        "/workers",
        "/runs",
        f"/jobs/{job_id}",
        f"/jobs/{waiting}",
        f"/runs?type={job_type}&outcome=failed",
    ):
        page = c.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "<script>window.__xss" not in page.text, path
        assert 'onerror="window' not in page.text, path
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["x-frame-options"] == "DENY"
    job_page = c.get(f"/jobs/{job_id}").text
    # Params, error (with its traceback) and output all show, as text.
    assert job_page.count(ESCAPED) >= 3
    assert "Traceback (most recent call last)" in job_page
    assert ESCAPED in c.get(f"/runs?type={job_type}").text
    assert ESCAPED in c.get(f"/jobs/{waiting}").text
    assert job_type in c.get("/").text


def test_the_job_page_shows_the_trace_id_of_a_traced_job_and_of_its_runs(url: str) -> None:
    job_type = unique("dash_traced")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    execute(url, "select pgxjob_register_job_type(%s, 'default')", (job_type,))
    waiting = scalar(
        url, "select pgxjob_schedule(%s, trace_context => %s)", (job_type, traceparent)
    )
    untraced = scalar(url, "select pgxjob_schedule(%s)", (job_type,))
    c = client(make_app(url))
    assert f'<code class="trace">{trace_id}</code>' in c.get(f"/jobs/{waiting}").text
    assert 'class="trace"' not in c.get(f"/jobs/{untraced}").text
    execute(url, "select pgxjob_cancel_job(%s)", (waiting,))
    finished = c.get(f"/jobs/{waiting}").text
    assert "no longer waiting or running" in finished
    assert f'<code class="trace">{trace_id}</code>' in finished


def test_the_database_password_is_never_shown(url: str) -> None:
    # The server trusts local connections, so a password in the URL is ignored, not refused.
    with_password = make_conninfo(url, password="hunter2-very-secret")
    c = client(make_app(with_password))
    for path in ("/", "/workers", "/runs", "/jobs/1", "/metrics"):
        page = c.get(path)
        assert "hunter2" not in page.text, path
    dbname = conninfo_to_dict(url)["dbname"]
    assert f"/{dbname}</span>" in c.get("/").text, "the header names the database"


def test_each_action_needs_the_csrf_token_and_calls_its_function(url: str) -> None:
    job_type = unique("dash_act")
    group = unique("dash_g")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pgxjob_register_group(%s)", (group,))
        conn.execute("select pgxjob_register_job_type(%s, %s)", (job_type, group))
        timed = conn.execute(
            "select pgxjob_schedule(%s, run_at => now() + interval '1 day')", (job_type,)
        ).fetchone()[0]
        doomed = conn.execute(
            "select pgxjob_schedule(%s, run_at => now() + interval '1 day')", (job_type,)
        ).fetchone()[0]
    c = client(make_app(url))
    token = csrf_of(c)

    # Without the token, or with a wrong one: refused, nothing changes.
    assert c.post(f"/jobs/{doomed}/cancel").status_code == 403
    assert c.post(f"/jobs/{doomed}/cancel", data={"csrf": "x" * 43}).status_code == 403
    other = TestClient(make_app(url), follow_redirects=False)
    assert other.post(f"/jobs/{doomed}/cancel", data={"csrf": token}).status_code == 403, (
        "a token without its cookie is refused"
    )
    assert scalar(url, "select count(*) from pgxjob_run_at_jobs where id = %s", (doomed,)) == 1

    response = c.post(f"/jobs/{timed}/run-now", data={"csrf": token})
    assert response.status_code == 303
    assert response.headers["location"] == f"/jobs/{timed}?notice=due"
    assert scalar(
        url, "select next_run_at <= now() from pgxjob_run_at_jobs where id = %s", (timed,)
    )
    assert "due now" in c.get(response.headers["location"]).text

    response = c.post(f"/jobs/{doomed}/cancel", data={"csrf": token})
    assert response.headers["location"] == f"/jobs/{doomed}?notice=cancelled"
    assert (
        scalar(url, "select outcome from pgxjob_job_runs where job_id = %s", (doomed,))
        == "cancelled"
    )

    response = c.post(f"/groups/{group}/pause", data={"csrf": token})
    assert response.headers["location"] == "/?notice=paused"
    assert scalar(url, "select paused_at is not null from pgxjob_groups where name = %s", (group,))
    assert (
        c.post(f"/groups/{group}/pause", data={"csrf": token})
        .headers["location"]
        .endswith("already_paused")
    )
    assert "paused" in c.get("/").text
    response = c.post(f"/groups/{group}/resume", data={"csrf": token})
    assert response.headers["location"] == "/?notice=resumed"
    assert scalar(url, "select paused_at is null from pgxjob_groups where name = %s", (group,))

    failed = failed_job(url, job_type, '{"n": 1}', "boom", None)
    response = c.post(f"/jobs/{failed}/runs/1/retry", data={"csrf": token})
    assert response.status_code == 303
    new_id = int(re.search(r"/jobs/(\d+)\?notice=retried", response.headers["location"])[1])
    assert scalar(url, "select params::text from pgxjob_asap_jobs where id = %s", (new_id,)) == (
        '{"n": 1}'
    )
    refused = c.post(f"/jobs/{new_id}/runs/1/retry", data={"csrf": token})
    assert refused.status_code == 400 and "no run 1" in refused.text

    old = scalar(url, "select count(*) from pgxjob_job_runs")
    execute(
        url,
        "update pgxjob_job_runs set finished_at = finished_at - interval '40 days'"
        " where job_id = %s",
        (failed,),
    )
    response = c.post("/runs/prune", data={"csrf": token, "older_than": "30d"})
    assert response.headers["location"] == "/runs?notice=pruned"
    assert scalar(url, "select count(*) from pgxjob_job_runs") == old - 1
    assert c.post("/runs/prune", data={"csrf": token, "older_than": "1y"}).status_code == 400

    unknown = c.post("/groups/no-such-group/pause", data={"csrf": token})
    assert unknown.status_code == 400 and "unknown group" in unknown.text


def test_read_only_offers_no_action_and_refuses_posts(url: str) -> None:
    job_type = unique("dash_ro")
    job_id = failed_job(url, job_type, "{}", "boom", None)
    c = client(make_app(url, read_only=True))
    for path in ("/", "/runs", f"/jobs/{job_id}"):
        page = c.get(path)
        assert page.status_code == 200
        assert 'method="post"' not in page.text, path
        assert "read-only" in page.text
    token = re.search(r"pgxjob_dashboard_csrf=([^;]+)", c.get("/").headers.get("set-cookie", ""))
    data = {"csrf": token[1] if token else ""}
    assert c.post(f"/jobs/{job_id}/runs/1/retry", data=data).status_code == 403
    assert c.post("/groups/default/pause", data=data).status_code == 403
    assert scalar(url, "select paused_at is null from pgxjob_groups where name = 'default'")


def test_with_a_token_everything_needs_it(url: str) -> None:
    token = secrets.token_urlsafe(24)
    c = client(make_app(url, token=token))
    assert c.get("/").status_code == 303 and c.get("/").headers["location"] == "/login"
    assert c.get("/runs").headers["location"] == "/login"
    assert c.get("/metrics").status_code == 401
    assert c.get("/fragments/overview", headers={"hx-request": "true"}).status_code == 401
    assert c.get("/metrics", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert c.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401

    csrf = csrf_of(c, "/login")
    assert c.post("/groups/default/pause", data={"csrf": csrf}).status_code == 403
    assert c.post("/login", data={"csrf": csrf, "token": "wrong"}).status_code == 403
    assert c.post("/login", data={"token": token}).status_code == 403, "login needs CSRF too"
    signed_in = c.post("/login", data={"csrf": csrf, "token": token})
    assert signed_in.status_code == 303
    assert token not in signed_in.headers["set-cookie"], "the cookie is not the token itself"
    assert c.get("/").status_code == 200
    group = unique("dash_tok")
    query(url, "select pgxjob_register_group(%s)", (group,))
    assert c.post(f"/groups/{group}/pause", data={"csrf": csrf}).status_code == 303
    with pytest.raises(ValueError, match="16 characters"):
        make_app(url, token="short")


def test_runs_are_paged_by_keyset_newest_first_with_filters(url: str) -> None:
    job_type = unique("dash_page")
    query(url, "select pgxjob_register_job_type(%s, 'default')", (job_type,))
    # 130 runs: 120 succeeded over the last two hours (ten share one instant), 10 failed.
    execute(
        url,
        "insert into pgxjob_job_runs (job_id, run_number, group_id, type_id, inserted_at, run_at,"
        " started_at, finished_at, outcome, error)"
        " select -n, 1, 1, t.id, now(), now(), now(),"
        "  case when n <= 10 then now() - interval '1 minute'"
        "   else now() - n * interval '1 minute' end,"
        "  case when n %% 13 = 0 then 'failed' else 'succeeded' end,"
        "  case when n %% 13 = 0 then 'boom' end"
        " from generate_series(1, 130) n, pgxjob_job_types t where t.name = %s",
        (job_type,),
    )
    c = client(make_app(url))
    seen: list[int] = []
    path = f"/runs?type={job_type}"
    pages = 0
    while path:
        page = c.get(path)
        assert page.status_code == 200
        seen += [int(x) for x in re.findall(r'<a href="/jobs/(-\d+)">', page.text)]
        pages += 1
        nxt = re.search(r'<a class="next" href="([^"]+)"', page.text)
        path = nxt[1].replace("&amp;", "&") if nxt else ""
        assert pages < 10
    assert pages == 3
    # Newest first; within the instant jobs -1 to -10 share, job id descending (-1 before -2).
    assert seen == [-n for n in range(1, 131)]
    failed = c.get(f"/runs?type={job_type}&outcome=failed").text
    assert len(re.findall(r'<a href="/jobs/(-\d+)">', failed)) == 10
    assert c.get(f"/runs?type={job_type}&outcome=bogus").status_code == 400
    assert c.get("/runs?since=yesterday").status_code == 400
    assert c.get("/runs?type=no-such-type").status_code == 400


def test_a_paused_group_stops_its_worker_fetching(url: str) -> None:
    group = unique("dash_pause")
    job_type = unique("dash_pause_t")
    done: list[int] = []

    def handler(job: pgxjob.Job) -> None:
        done.append(job.id)

    scheduler = pgxjob.Scheduler(
        url,
        job_groups=[group],
        job_types=[pgxjob.JobTypeConfig(job_type, handler, default_group_name=group)],
    )
    try:
        scheduler.wait_ready(10)
        worker = scheduler.start_worker(group_name=group, poll_interval=30)
        assert worker.startup_complete.wait(10)
        c = client(make_app(url))
        token = csrf_of(c)
        first = scalar(url, "select pgxjob_schedule(%s)", (job_type,))
        wait_for(lambda: first in done, 10, "the first job to run")

        assert c.post(f"/groups/{group}/pause", data={"csrf": token}).status_code == 303
        paused_ids = [scalar(url, "select pgxjob_schedule(%s)", (job_type,)) for _ in range(3)]
        timed = scalar(
            url,
            "select pgxjob_schedule(%s, run_at => now() + interval '200 milliseconds')",
            (job_type,),
        )
        time.sleep(1.5)
        assert not set(paused_ids) & set(done), "a paused group's worker claims nothing"
        assert timed not in done
        assert scalar(url, "select count(*) from pgxjob_asap_jobs where worker_id is not null") == 0

        assert c.post(f"/groups/{group}/resume", data={"csrf": token}).status_code == 303
        # The resume notifies the idle worker, which sleeps for 30 s otherwise.
        wait_for(lambda: set([*paused_ids, timed]) <= set(done), 5, "the jobs to run after resume")
    finally:
        scheduler.close(timeout=10)


def test_the_dashboard_command_refuses_unsafe_setups(url: str, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgxjob", "--database-url", url, "dashboard", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = run("--bind", "0.0.0.0")
    assert refused.returncode == 2
    assert "without --token-file" in refused.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    assert "at least 16" in run("--bind", "0.0.0.0", "--token-file", str(short)).stderr
    loose = tmp_path / "loose"
    loose.write_text(secrets.token_urlsafe(24))
    loose.chmod(0o644)
    assert "chmod 600" in run("--token-file", str(loose)).stderr
    assert "--base-path" in run("--base-path", "jobs").stderr
    assert run("--port", "70000").returncode == 2


def test_the_dashboard_command_serves_under_a_base_path(url: str) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgxjob",
            "--database-url",
            url,
            "dashboard",
            "--port",
            str(port),
            "--base-path",
            "/jobs/",
            "--read-only",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs/runs", timeout=2) as r:
                    body = r.read().decode()
                    headers = r.headers
                break
            except OSError:
                time.sleep(0.2)
        assert "<h1>Runs</h1>" in body
        assert 'href="/jobs/static/dashboard.css"' in body, "links carry the base path"
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs/metrics", timeout=5) as r:
            assert "pgxjob_workers" in r.read().decode()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "dashboard on http://127.0.0.1" in err
