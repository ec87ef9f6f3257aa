"""Django: schedule() joins transaction.atomic(), and `manage.py pgxjob worker` runs the jobs.

A real Django project (tests/django_project) on a scratch PostgreSQL database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgxjob.migrations import migrate
from tests.dbserver import ROOT, scratch_database

django = pytest.importorskip("django")


@pytest.fixture(scope="module")
def django_db() -> Iterator[str]:
    from django.conf import settings

    if settings.configured:
        pytest.skip("Django settings were configured by another test module")
    with scratch_database("pgxjob_django") as url:
        migrate(url)
        os.environ["PGXJOB_DJANGO_DATABASE"] = url
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", run_syncdb=True, verbosity=0)
        try:
            yield url
        finally:
            from pgxjob.contrib.django import get_scheduler

            get_scheduler().close(timeout=5)
            connections.close_all()


def _jobs(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "select id, params::text from pgxjob_asap_jobs"
            " union all select id, params::text from pgxjob_run_at_jobs order by 1"
        ).fetchall()


def _truncate(url: str) -> None:
    from tests.conftest import truncate_pgxjob_tables

    truncate_pgxjob_tables(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate accounts_account")


def test_schedule_commits_with_the_atomic_block_and_rolls_back_with_it(django_db: str) -> None:
    from django.db import transaction

    from pgxjob.contrib.django import schedule
    from tests.django_project.accounts.models import Account

    _truncate(django_db)
    with transaction.atomic():
        account = Account.objects.create(email="ada@example.com")
        job_id = schedule("django_welcome", {"account_id": account.pk}, priority=2)
        # Not visible to another session before the block commits.
        assert _jobs(django_db) == []
    assert _jobs(django_db) == [(job_id, f'{{"account_id":{account.pk}}}')]

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        other = Account.objects.create(email="bob@example.com")
        schedule("django_welcome", {"account_id": other.pk})
        raise Abort
    assert _jobs(django_db) == [(job_id, f'{{"account_id":{account.pk}}}')]
    assert not Account.objects.filter(email="bob@example.com").exists()


def test_schedule_outside_atomic_commits_at_once_and_schedule_many_keeps_order(
    django_db: str,
) -> None:
    from pgxjob.contrib.django import schedule, schedule_many

    _truncate(django_db)
    first = schedule("django_welcome", {"account_id": 0})
    more = schedule_many("django_welcome", [{"account_id": 1}, {"account_id": 2}])
    assert [row[0] for row in _jobs(django_db)] == [first, *more]


def test_a_failed_schedule_marks_the_atomic_block_for_rollback(django_db: str) -> None:
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    from pgxjob.contrib.django import schedule
    from pgxjob.errors import UnknownJobTypeError
    from tests.django_project.accounts.models import Account

    _truncate(django_db)
    with transaction.atomic():
        Account.objects.create(email="carol@example.com")
        with pytest.raises(UnknownJobTypeError, match="no_such_type"):
            schedule("no_such_type")
        # As after any failed query inside atomic(): Django refuses to go on.
        with pytest.raises(TransactionManagementError):
            Account.objects.count()
    assert Account.objects.count() == 0
    assert _jobs(django_db) == []


def test_manage_py_pgxjob_worker_runs_the_jobs_with_the_project_settings(django_db: str) -> None:
    from django.db import transaction

    from pgxjob.contrib.django import schedule
    from tests.django_project.accounts.models import Account

    _truncate(django_db)
    with transaction.atomic():
        accounts = [Account.objects.create(email=f"user{i}@example.com") for i in range(3)]
        for account in accounts:
            schedule("django_welcome", {"account_id": account.pk})
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.django_project.settings",
        "PGXJOB_DJANGO_DATABASE": django_db,
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "django", "pgxjob", "worker", "--until-empty", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert Account.objects.filter(welcomed=True).count() == 3
    assert _jobs(django_db) == []


def test_manage_py_pgxjob_without_a_command_says_what_to_give(django_db: str) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="name a pgxjob command"):
        call_command("pgxjob")
