"""``manage.py pgxjob ...``: the pgxjob command line with the project's database and Scheduler."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pgxjob.cli import main
from pgxjob.contrib.django import database_url


class Command(BaseCommand):
    help = (
        "pgxjob's command line (migrate, worker, status, runs, schedule, ...) on the project's "
        "database. `worker` runs the Scheduler of settings.PGXJOB_SCHEDULER unless an APP is "
        "given. Example: manage.py pgxjob worker --group default --concurrency 8"
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--database", default="default", help="the Django database to use (default: default)"
        )
        parser.add_argument("args", nargs=argparse.REMAINDER, help="a pgxjob command and options")

    def handle(self, *args: str, **options: Any) -> None:
        argv = list(args)
        if not argv:
            raise CommandError("name a pgxjob command, for example: manage.py pgxjob worker")
        if argv[0] == "worker" and (len(argv) == 1 or argv[1].startswith("-")):
            spec = getattr(settings, "PGXJOB_SCHEDULER", None)
            if not isinstance(spec, str):
                raise CommandError(
                    "set PGXJOB_SCHEDULER = 'module:attribute' (the project's pgxjob.Scheduler) "
                    "in settings, or give it: manage.py pgxjob worker myproject.jobs:scheduler"
                )
            argv.insert(1, spec)
        schema = getattr(settings, "PGXJOB_SCHEMA", None)
        common = ["--database-url", database_url(options["database"])]
        if schema and "--schema" not in argv:
            common += ["--schema", schema]
        code = main([*common, *argv])
        if code:
            sys.exit(code)
