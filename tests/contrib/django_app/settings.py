"""Django settings shared by the test process and its workers; the databases come from the
environment the test sets: ``DJANGO_TEST_SQLITE`` (a file path) and, for the PostgreSQL variants,
``DJANGO_TEST_PG`` (a schema in database ``test`` of the server the test started on 127.0.0.1,
port ``DJANGO_TEST_PG_PORT``)."""

import os

SECRET_KEY = "greenq-tests"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "tests.contrib.django_app"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_TEST_SQLITE"]},
}
if os.environ.get("DJANGO_TEST_PG"):
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": int(os.environ["DJANGO_TEST_PG_PORT"]),
        "OPTIONS": {
            "options": f"-c search_path={os.environ['DJANGO_TEST_PG']}",
            "application_name": os.environ["DJANGO_TEST_PG"],  # to count this run's connections
        },
    }

# greenq reads these through app.config_from_object("django.conf:settings", namespace="GREENQ").
GREENQ_TASK_DEFAULT_QUEUE = "django"
GREENQ_TASK_ROUTES = {"tests.contrib.django_app.tasks.routed": {"queue": "routed"}}
