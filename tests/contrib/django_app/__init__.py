"""A Django app for the greenq.contrib.django tests: settings, one model, tasks that read it.

The test process and the ``greenq worker -A tests.contrib.django_app.greenq_app`` it starts
both configure Django from ``settings.py`` here, so the worker's tasks read the same database
files (sqlite path in ``DJANGO_TEST_SQLITE``) or PostgreSQL schema (``DJANGO_TEST_PG``).
"""
