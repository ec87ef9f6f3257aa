"""pgxjob: a job runner on PostgreSQL whose core is plain PL/pgSQL."""

from __future__ import annotations
