"""The project's greenq app: ``greenq worker -A shop.greenq_app``; tasks import ``app`` from here.

Like Celery's ``proj/celery.py``, minus the ``__init__.py`` import: nothing needs the app
before a view or a worker does, so ``shop/__init__.py`` stays empty.
"""

import os

from greenq import GreenQ

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = GreenQ("shop")
app.config_from_object("django.conf:settings", namespace="GREENQ")
# Imports orders/tasks.py (and every installed app's tasks.py) the first time the tasks are
# needed; in the worker, that first sets Django up.
app.autodiscover_tasks()
