"""The dashboard in a real headless Chromium (Debian's package) driven by Selenium: pages load
without console errors (CSP violations included), the overview refreshes live, actions work
through the UI and are refused without the token, and job-controlled values render as text.

Set PGXJOB_SCREENSHOTS=DIR to write a screenshot of each page there.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("selenium")
pytest.importorskip("uvicorn")
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pgxjob.dashboard import create_app
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromium-driver are missing: .ci/run installs them")
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database("pgxjob_browser") as conninfo:
        migrate(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("select pgxjob_register_group('emails')")
            conn.execute("select pgxjob_register_job_type('send_receipt', 'emails')")
            conn.execute("select pgxjob_register_job_type('charge_card', 'default')")
        yield conninfo


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """The app on a free port of 127.0.0.1, in a thread; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def site(url: str) -> Iterator[str]:
    app = create_app(url, refresh_seconds=0.5)
    with served(app) as base:
        yield base
    app.state.dashboard.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def sql(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def failed_job(url: str, job_type: str) -> int:
    """A job whose only run failed for good, with XSS payloads in its params, error and output."""
    with psycopg.connect(url, autocommit=True) as conn:
        job_id = conn.execute(
            "select pgxjob_schedule(%s, %s::json)", (job_type, json.dumps({"name": XSS}))
        ).fetchone()[0]
        group = conn.execute(
            "select g.name from pgxjob_job_types t join pgxjob_groups g"
            " on g.id = t.default_group_id where t.name = %s",
            (job_type,),
        ).fetchone()[0]
        worker = conn.execute(
            "select pgxjob_describe_worker(pgxjob_register_worker(%s, interval '1 hour'),"
            " 'web-1', 4242)",
            (group,),
        ).fetchone()[0]
        conn.execute("update pgxjob_asap_jobs set worker_id = %s where id = %s", (worker, job_id))
        conn.execute(
            "select pgxjob_record_job_results(%s, array[%s::bigint], array[0],"
            " array[now() - interval '2 seconds'], array[now()], array[%s::text],"
            " array[null::timestamptz], array[null::int], array[null::interval], array[true],"
            " array[%s::json])",
            (
                worker,
                job_id,
                f"RuntimeError: {XSS}\nTraceback (most recent call last):\n  {XSS}",
                json.dumps({"html": XSS}),
            ),
        )
        return int(job_id)


def wait_text(driver: webdriver.Chrome, css: str, text: str, timeout: float = 10) -> None:
    try:
        # The overview's live refresh may replace the element between finding and reading it.
        WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: text in d.find_element(By.CSS_SELECTOR, css).text
        )
    except TimeoutException:
        raise AssertionError(
            f"{text!r} never appeared in {css}: {driver.find_element(By.CSS_SELECTOR, css).text!r}"
        ) from None


def click(driver: webdriver.Chrome, css: str) -> None:
    """Click the element; again if the overview's live refresh replaced it meanwhile."""
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{css} kept being replaced")


def shoot(driver: webdriver.Chrome, name: str, tmp: Path) -> None:
    target = Path(os.environ.get("PGXJOB_SCREENSHOTS") or tmp)
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"dashboard-{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 5000


def test_each_page_loads_without_console_errors_and_shows_payloads_as_text(
    url: str, site: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    job_id = failed_job(url, "charge_card")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select pgxjob_schedule_many('charge_card', array_fill('{}'::json, array[40]))"
        )
        conn.execute(
            "select pgxjob_schedule('send_receipt', %s::json, run_at => now() + interval '1 hour')",
            (json.dumps({"to": XSS}),),
        )
        conn.execute(
            "select pgxjob_schedule_periodic('nightly_report', '0 3 * * *', 'send_receipt')"
        )
        conn.execute("select pgxjob_register_worker('emails', interval '1 hour')")
    browser.get_log("browser")
    for name, path in (
        ("overview", "/"),
        ("workers", "/workers"),
        ("runs", "/runs"),
        ("job", f"/jobs/{job_id}"),
    ):
        browser.get(site + path)
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.TAG_NAME, "h1"))
        time.sleep(0.8)  # one live refresh on the overview
        assert console_errors(browser) == [], name
        assert browser.execute_script("return window.__xss") is None, name
        shoot(browser, name, tmp_path)
    body = browser.find_element(By.TAG_NAME, "body").text
    # The job page shows the payloads in params, error and output, literally.
    assert body.count("<script>window.__xss=1</script>") >= 3
    browser.get(site + "/runs?outcome=failed")
    assert "<script>window.__xss=1</script>" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.execute_script("return htmx.version") == "2.0.11", "htmx is loaded"
    assert console_errors(browser) == []


def test_the_overview_shows_a_newly_scheduled_job_without_a_reload(
    url: str, site: str, browser: webdriver.Chrome
) -> None:
    sql(url, "select pgxjob_register_group('live_group')")
    sql(url, "select pgxjob_register_job_type('live_type', 'live_group')")
    browser.get(site + "/")
    browser.execute_script("window.__not_reloaded = true")
    wait_text(browser, "table.jobs", "live_type")
    cell = 'table.jobs tr[data-type="live_type"] td.waiting'
    assert browser.find_element(By.CSS_SELECTOR, cell).text == "0"
    sql(url, "select pgxjob_schedule('live_type')")
    wait_text(browser, cell, "1")
    assert browser.execute_script("return window.__not_reloaded") is True, "no reload happened"
    assert console_errors(browser) == []


def test_actions_work_through_the_ui(url: str, site: str, browser: webdriver.Chrome) -> None:
    timed = sql(url, "select pgxjob_schedule('send_receipt', run_at => now() + interval '1 day')")
    browser.get(f"{site}/jobs/{timed}")
    browser.find_element(By.XPATH, "//button[text()='Run now']").click()
    wait_text(browser, "p.notice", "due now")
    assert sql(url, "select next_run_at <= now() from pgxjob_run_at_jobs where id = %s", (timed,))

    browser.find_element(By.XPATH, "//button[text()='Cancel']").click()
    wait_text(browser, "p.notice", "cancelled")
    assert (
        sql(url, "select outcome from pgxjob_job_runs where job_id = %s", (timed,)) == "cancelled"
    )

    failed = failed_job(url, "send_receipt")
    browser.get(f"{site}/jobs/{failed}")
    browser.find_element(By.XPATH, "//button[text()='Retry']").click()
    wait_text(browser, "p.notice", "new job was scheduled")
    new_id = int(browser.current_url.split("/jobs/")[1].split("?")[0])
    assert new_id != failed
    assert sql(url, "select count(*) from pgxjob_asap_jobs where id = %s", (new_id,)) == 1

    browser.get(site + "/")
    row = "table.groups tr[data-group='emails']"
    click(browser, f"{row} button")
    wait_text(browser, "p.notice", "paused")
    wait_text(browser, row, "paused")
    assert sql(url, "select paused_at is not null from pgxjob_groups where name = 'emails'")
    click(browser, f"{row} button")
    wait_text(browser, "p.notice", "running again")
    assert sql(url, "select paused_at is null from pgxjob_groups where name = 'emails'")

    before = sql(url, "select count(*) from pgxjob_job_runs")
    sql(
        url,
        "update pgxjob_job_runs set finished_at = now() - interval '60 days' where job_id = %s"
        " returning 1",
        (failed,),
    )
    browser.get(site + "/runs")
    browser.find_element(By.XPATH, "//button[text()='Prune the run log']").click()
    wait_text(browser, "p.notice", "pruned")
    assert sql(url, "select count(*) from pgxjob_job_runs") == before - 1
    assert console_errors(browser) == []


def test_actions_are_refused_without_the_token(url: str, browser: webdriver.Chrome) -> None:
    token = secrets.token_urlsafe(24)
    job = sql(url, "select pgxjob_schedule('send_receipt', run_at => now() + interval '1 day')")
    app = create_app(url, token=token)
    with served(app) as site:
        browser.get(f"{site}/jobs/{job}")
        assert browser.current_url.endswith("/login"), "pages need the token"
        # A form posted without signing in, with a valid CSRF token from the login page.
        csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
        browser.execute_script(
            "const f = document.createElement('form'); f.method = 'post';"
            f"f.action = '/jobs/{job}/cancel';"
            "const i = document.createElement('input'); i.name = 'csrf'; i.value = arguments[0];"
            "f.appendChild(i); document.body.appendChild(f); f.submit();",
            csrf,
        )
        WebDriverWait(browser, 10).until(lambda d: "sign in first" in d.page_source)
        assert sql(url, "select count(*) from pgxjob_run_at_jobs where id = %s", (job,)) == 1

        browser.get(f"{site}/login")
        browser.find_element(By.NAME, "token").send_keys("not-the-token-at-all")
        browser.find_element(By.XPATH, "//button[text()='Sign in']").click()
        wait_text(browser, "main", "not the dashboard's token")
        browser.get_log("browser")  # the 403 of a refused sign-in is logged as an error

        browser.find_element(By.NAME, "token").send_keys(token)
        browser.find_element(By.XPATH, "//button[text()='Sign in']").click()
        wait_text(browser, "p.notice", "Signed in")
        browser.get(f"{site}/jobs/{job}")
        browser.find_element(By.XPATH, "//button[text()='Cancel']").click()
        wait_text(browser, "p.notice", "cancelled")
        assert sql(url, "select count(*) from pgxjob_run_at_jobs where id = %s", (job,)) == 0
        assert console_errors(browser) == []
    app.state.dashboard.close()
