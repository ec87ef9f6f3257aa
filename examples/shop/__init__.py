"""An example shop on pgxjob: orders whose insert trigger schedules their confirmation.

- ``schema.sql``: the orders table and its trigger, which calls ``pgxjob_schedule``.
- ``app.py``: the job handlers and the Scheduler that ``pgxjob worker`` runs.
- ``__main__.py``: ``python -m examples.shop setup | load | report``.
"""
