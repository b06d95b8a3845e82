"""Settings of the django_shop example: sqlite, one app (orders), greenq's settings as GREENQ_*."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-shop-example-not-secret"  # an example: never ship a key in source
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["orders"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}

# greenq reads every GREENQ_<SETTING> here (shop/greenq_app.py); a misspelled name is an error
# with a suggestion. No GREENQ_BROKER_URL: greenq starts the embedded Redis under ./.greenq,
# shared by runserver and the worker when both run from this directory. In production:
# GREENQ_BROKER_URL = "redis://redis.internal:6379/0" (or the GREENQ_BROKER_URL env variable).
GREENQ_TASK_DEFAULT_QUEUE = "shop"
GREENQ_TASK_ROUTES = {"orders.tasks.send_receipt": {"queue": "shop-mail"}}
GREENQ_WORKER_QUEUES = ["shop", "shop-mail"]
GREENQ_WORKER_CONCURRENCY = 20
