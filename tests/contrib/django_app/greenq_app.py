"""The GreenQ app of the Django tests, laid out as a Django project's would be (``-A`` target)."""

import os

from greenq import GreenQ

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.contrib.django_app.settings")

app = GreenQ("django-tests")
app.config_from_object("django.conf:settings", namespace="GREENQ")
app.autodiscover_tasks()
