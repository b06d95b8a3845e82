"""The one model the tests write in a transaction and the worker reads."""

from django.db import models


class Order(models.Model):
    sku = models.CharField(max_length=40)
    quantity = models.IntegerField()
