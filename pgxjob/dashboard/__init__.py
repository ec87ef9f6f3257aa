"""The web dashboard: overview, workers, runs and job pages, actions, and Prometheus /metrics.

Needs the ``dashboard`` extra. ``pgxjob dashboard`` serves it; :func:`create_app` returns the
ASGI application for mounting in a Starlette, FastAPI or Django (ASGI) project.
"""

from __future__ import annotations

from pgxjob.dashboard.app import CONTENT_SECURITY_POLICY, create_app, describe_database

__all__ = ["CONTENT_SECURITY_POLICY", "create_app", "describe_database"]
