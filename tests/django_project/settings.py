"""Settings of the test project: its database is PGXJOB_DJANGO_DATABASE (a libpq conninfo)."""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ["PGXJOB_DJANGO_DATABASE"])

SECRET_KEY = "pgxjob-tests-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["pgxjob.contrib.django", "tests.django_project.accounts"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db["dbname"],
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}
PGXJOB_SCHEDULER = "tests.django_project.jobs:scheduler"
