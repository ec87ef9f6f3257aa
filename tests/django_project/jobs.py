"""The project's Scheduler (settings.PGXJOB_SCHEDULER): welcome an account through the ORM."""

from __future__ import annotations

import json

from django.db import close_old_connections

import pgxjob
from pgxjob.contrib.django import database_url


@pgxjob.job_type("django_welcome")
def welcome(job: pgxjob.Job) -> None:
    from tests.django_project.accounts.models import Account

    assert job.params is not None
    account_id = json.loads(job.params)["account_id"]
    updated = Account.objects.filter(pk=account_id, welcomed=False).update(welcomed=True)
    # Runner threads live long: let Django drop a connection it considers stale.
    close_old_connections()
    if not updated:
        raise LookupError(f"no account {account_id} waiting for its welcome")


scheduler = pgxjob.Scheduler(database_url(), job_types=[welcome])
