"""An asyncio web app on pgxjob: a Starlette endpoint that schedules a job in its request's
transaction, and an async handler that runs it.

- ``app.py``: the app (``create_app``), the job type and the Scheduler the worker runs.

Run it (DATABASE_URL set, pgxjob migrated)::

    uvicorn --factory examples.asgi.app:create_app
    pgxjob worker examples.asgi.app:make_scheduler
    curl -X POST localhost:8000/signups -d '{"email": "ada@example.com"}'

FastAPI is Starlette underneath: the endpoint's body is the same in a FastAPI route.
"""
