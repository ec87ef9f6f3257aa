"""A minimal Django project on PostgreSQL for tests/test_django.py: one app, one job type."""
