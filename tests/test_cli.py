"""The pgxjob console script, run in subprocesses against real PostgreSQL: migrate, schedule,
status, runs, prune, database selection, and one clear line on stderr for each bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgxjob.cli import parse_duration, parse_run_at
from pgxjob.migrations import latest_version

PGXJOB = Path(sys.executable).with_name("pgxjob")
UNREACHABLE_URL = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=3"


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (python -m pgxjob when it is not installed)."""
    command = [str(PGXJOB)] if PGXJOB.exists() else [sys.executable, "-m", "pgxjob"]
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def sql(conninfo: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def assert_one_error_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pgxjob"), lines
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def shop_db(clean_db: str) -> str:
    """The session database with job types cli_confirm (default group) and cli_mail (cli_mail)."""
    sql(clean_db, "select pgxjob_register_group('cli_mail')")
    sql(clean_db, "select pgxjob_register_job_type('cli_confirm')")
    sql(clean_db, "select pgxjob_register_job_type('cli_mail', 'cli_mail')")
    return clean_db


# -- migrate --------------------------------------------------------------------------------------


def test_migrate_applies_every_migration_then_is_a_no_op(empty_db_url: str) -> None:
    check = run_cli("migrate", "--check", "--database-url", empty_db_url)
    assert check.returncode == 1
    assert "run `pgxjob migrate`" in check.stderr

    first = run_cli("migrate", "--database-url", empty_db_url)
    assert first.returncode == 0, first.stderr
    versions = ", ".join(str(v) for v in range(1, latest_version() + 1))
    assert f"applied pgxjob migrations {versions}" in first.stdout
    assert sql(empty_db_url, "select max(version) from pgxjob_schema_migrations") == [
        (latest_version(),)
    ]

    again = run_cli("migrate", "--database-url", empty_db_url)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert run_cli("migrate", "--check", "--database-url", empty_db_url).returncode == 0


def test_database_url_comes_from_the_flag_before_the_environment(db_url: str) -> None:
    from_env = run_cli("status", env={"DATABASE_URL": db_url})
    assert from_env.returncode == 0, from_env.stderr
    assert "(DATABASE_URL)" in from_env.stdout

    from_flag = run_cli("status", "--database-url", db_url, env={"DATABASE_URL": UNREACHABLE_URL})
    assert from_flag.returncode == 0, from_flag.stderr
    assert "(--database-url)" in from_flag.stdout


def test_global_options_work_before_and_after_the_command(db_url: str) -> None:
    before = run_cli("--database-url", db_url, "status")
    after = run_cli("status", "--database-url", db_url)
    assert before.returncode == after.returncode == 0


def test_python_dash_m_pgxjob_is_the_same_command(db_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgxjob", "status", "--json", "--database-url", db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema_version"] == latest_version()


# -- schedule -------------------------------------------------------------------------------------


def test_schedule_prints_the_job_id_of_an_asap_job(shop_db: str) -> None:
    proc = run_cli("schedule", "cli_confirm", '{"order_id": 7}', "--database-url", shop_db)
    assert proc.returncode == 0, proc.stderr
    job_id = int(proc.stdout.strip())
    rows = sql(
        shop_db,
        "select j.params::text, g.name from pgxjob_asap_jobs j"
        " join pgxjob_groups g on g.id = j.group_id where j.id = %s",
        (job_id,),
    )
    assert rows == [('{"order_id": 7}', "default")]


def test_schedule_without_params_stores_null_and_honours_group(shop_db: str) -> None:
    proc = run_cli("schedule", "cli_confirm", "--group", "cli_mail", "--database-url", shop_db)
    assert proc.returncode == 0, proc.stderr
    rows = sql(
        shop_db,
        "select j.params is null, g.name from pgxjob_asap_jobs j"
        " join pgxjob_groups g on g.id = j.group_id where j.id = %s",
        (int(proc.stdout),),
    )
    assert rows == [(True, "cli_mail")]


def test_schedule_reads_params_from_stdin(shop_db: str) -> None:
    proc = run_cli("schedule", "cli_mail", "-", "--database-url", shop_db, stdin='{"to": "a@b"}')
    assert proc.returncode == 0, proc.stderr
    rows = sql(
        shop_db, "select params->>'to' from pgxjob_asap_jobs where id = %s", (int(proc.stdout),)
    )
    assert rows == [("a@b",)]


def test_schedule_run_at_delay_is_added_to_the_database_clock(shop_db: str) -> None:
    proc = run_cli("schedule", "cli_confirm", "--run-at", "+1h", "--database-url", shop_db)
    assert proc.returncode == 0, proc.stderr
    rows = sql(
        shop_db,
        "select abs(extract(epoch from run_at - (now() + interval '1 hour'))) < 30"
        " from pgxjob_run_at_jobs where id = %s",
        (int(proc.stdout),),
    )
    assert rows == [(True,)]


def test_schedule_run_at_iso_time(shop_db: str) -> None:
    proc = run_cli(
        "schedule", "cli_confirm", "--run-at", "2099-01-31T09:00:00Z", "--database-url", shop_db
    )
    assert proc.returncode == 0, proc.stderr
    rows = sql(shop_db, "select run_at from pgxjob_run_at_jobs where id = %s", (int(proc.stdout),))
    assert rows == [(dt.datetime(2099, 1, 31, 9, tzinfo=dt.UTC),)]


def test_schedule_run_at_now_is_asap(shop_db: str) -> None:
    proc = run_cli("schedule", "cli_confirm", "--run-at", "now", "--database-url", shop_db)
    assert proc.returncode == 0, proc.stderr
    assert sql(
        shop_db, "select count(*) from pgxjob_asap_jobs where id = %s", (int(proc.stdout),)
    ) == [(1,)]


# -- bad input: one line on stderr, exit 2 for usage and 1 at run time -----------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["schedule", "cli_confirm", "{not json"], 2, ["PARAMS_JSON is not valid JSON"]),
        (["schedule", "cli_confirm", "--run-at", "next tuesday"], 2, ["cannot parse --run-at"]),
        (["schedule", "no_such_type"], 1, ['unknown job type "no_such_type"', "pgxjob_register"]),
        (["schedule", "cli_confirm", "--group", "nope"], 1, ['unknown group "nope"']),
        (["runs", "--type", "no_such_type"], 1, ['unknown job type "no_such_type"']),
        (["runs", "--limit", "0"], 2, ["--limit"]),
        (["prune"], 2, ["--older-than"]),
        (["prune", "--older-than", "30"], 2, ["cannot parse duration"]),
        (["frobnicate"], 2, ["invalid choice"]),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    shop_db: str, args: list[str], code: int, words: list[str]
) -> None:
    proc = run_cli(*args, "--database-url", shop_db)
    assert_one_error_line(proc, code, *words)
    assert sql(shop_db, "select count(*) from pgxjob_asap_jobs") == [(0,)]


def test_unreachable_database_is_a_runtime_error() -> None:
    proc = run_cli("status", "--database-url", UNREACHABLE_URL)
    assert_one_error_line(proc, 1, "cannot connect to the database", "127.0.0.1:1")


def test_unparsable_database_url_is_a_usage_error() -> None:
    proc = run_cli("status", "--database-url", "bogus=1")
    assert_one_error_line(proc, 2, "invalid database URL")


@pytest.mark.parametrize(
    "command", [["status"], ["runs"], ["schedule", "x"], ["prune", "--older-than", "1d"]]
)
def test_a_database_without_pgxjob_says_to_migrate(empty_db_url: str, command: list[str]) -> None:
    proc = run_cli(*command, "--database-url", empty_db_url)
    assert_one_error_line(proc, 1, "pgxjob migrate")


def test_verbose_adds_the_traceback(shop_db: str) -> None:
    proc = run_cli("schedule", "no_such_type", "--verbose", "--database-url", shop_db)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("pgxjob: error: unknown job type")


# -- status ---------------------------------------------------------------------------------------


def _failed_run(conninfo: str, job_type: str, error: str) -> int:
    """Schedule, claim and fail one job through the SQL functions; return its id."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        job_id = conn.execute("select pgxjob_schedule(%s)", (job_type,)).fetchone()[0]  # type: ignore[index]
        group = conn.execute(
            "select g.name from pgxjob_asap_jobs j join pgxjob_groups g on g.id = j.group_id"
            " where j.id = %s",
            (job_id,),
        ).fetchone()[0]  # type: ignore[index]
        worker_id = conn.execute(
            "select pgxjob_register_worker(%s, interval '1 minute')", (group,)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("select * from pgxjob_fetch_jobs(%s, 1000)", (worker_id,))
        conn.execute(
            "select * from pgxjob_record_job_results(%s, array[%s]::bigint[], array[0],"
            " array[now()], array[now()], array[%s], array[null::timestamptz], array[null::int],"
            " array[null::interval], array[true])",
            (worker_id, job_id, error),
        )
        conn.execute("select pgxjob_unregister_worker(%s)", (worker_id,))
    return job_id


def test_status_shows_jobs_workers_and_failures(shop_db: str) -> None:
    failed_id = _failed_run(shop_db, "cli_confirm", "card declined")
    sql(shop_db, "select pgxjob_schedule('cli_confirm')")
    sql(shop_db, "select pgxjob_schedule('cli_confirm')")
    sql(shop_db, "select pgxjob_schedule('cli_mail', run_at => now() + interval '1 day')")
    worker_id = sql(shop_db, "select pgxjob_register_worker('cli_mail', interval '1 minute')")[0][0]

    proc = run_cli("status", "--database-url", shop_db)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    confirm = next(line.split() for line in lines if "cli_confirm" in line and "default" in line)
    assert confirm[:6] == ["default", "cli_confirm", "2", "0", "0", "0"]
    mail = next(line.split() for line in lines if line.split()[:2] == ["cli_mail", "cli_mail"])
    assert mail[2:6] == ["0", "1", "0", "0"]
    assert any(line.split()[:3] == [str(worker_id), "cli_mail", "alive"] for line in lines)
    assert any(str(failed_id) in line and "card declined" in line for line in lines)

    doc = json.loads(run_cli("status", "--json", "--database-url", shop_db).stdout)
    assert doc["schema_version"] == latest_version()
    by_type = {(j["group_name"], j["job_type"]): j for j in doc["jobs"]}
    assert by_type[("default", "cli_confirm")]["due"] == 2
    assert by_type[("cli_mail", "cli_mail")]["scheduled"] == 1
    assert [w["worker_id"] for w in doc["workers"]] == [worker_id]
    assert doc["recent_failures"][0]["job_id"] == failed_id
    assert doc["recent_failures"][0]["error"] == "card declined"


# -- runs and prune -------------------------------------------------------------------------------


def test_runs_lists_the_run_log_with_filters(shop_db: str) -> None:
    first = _failed_run(shop_db, "cli_confirm", "card declined")
    second = _failed_run(shop_db, "cli_mail", "mailbox full")

    everything = run_cli("runs", "--database-url", shop_db)
    assert everything.returncode == 0, everything.stderr
    assert "card declined" in everything.stdout
    assert "mailbox full" in everything.stdout
    # Newest first.
    assert everything.stdout.index("mailbox full") < everything.stdout.index("card declined")

    only_mail = run_cli("runs", "--type", "cli_mail", "--json", "--database-url", shop_db)
    records = [json.loads(line) for line in only_mail.stdout.splitlines()]
    assert [r["job_id"] for r in records] == [second]
    assert records[0]["error"] == "mailbox full"
    assert records[0]["group_name"] == "cli_mail"

    limited = run_cli("runs", "--limit", "1", "--json", "--failed", "--database-url", shop_db)
    assert [json.loads(line)["job_id"] for line in limited.stdout.splitlines()] == [second]

    by_group = run_cli("runs", "--group", "default", "--json", "--database-url", shop_db)
    assert [json.loads(line)["job_id"] for line in by_group.stdout.splitlines()] == [first]


def test_prune_deletes_only_runs_older_than_the_cutoff(shop_db: str) -> None:
    job_id = _failed_run(shop_db, "cli_confirm", "old failure")
    _failed_run(shop_db, "cli_confirm", "new failure")
    sql(
        shop_db,
        "update pgxjob_job_runs set finished_at = now() - interval '40 days' where job_id = %s",
        (job_id,),
    )
    proc = run_cli("prune", "--older-than", "30d", "--database-url", shop_db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("deleted 1 runs")
    assert sql(shop_db, "select error from pgxjob_job_runs") == [("new failure",)]


# -- value parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2.5h", 9000), ("30d", 2592000), ("500ms", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "5 parsecs", "h", "1h 2x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse duration"):
        parse_duration(text)


def test_parse_run_at_forms() -> None:
    assert parse_run_at("now") == (None, None)
    assert parse_run_at("+10m") == (None, dt.timedelta(minutes=10))
    assert parse_run_at("in 2h") == (None, dt.timedelta(hours=2))
    assert parse_run_at("2030-01-31T09:00:00+00:00") == (
        dt.datetime(2030, 1, 31, 9, tzinfo=dt.UTC),
        None,
    )
    local, _ = parse_run_at("2030-01-31 09:00")
    assert local is not None and local.tzinfo is not None
    with pytest.raises(ValueError, match="cannot parse --run-at"):
        parse_run_at("tomorrow")
