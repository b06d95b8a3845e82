"""URLs: the order form and one order's page."""

from django.urls import path
from orders import views

urlpatterns = [
    path("", views.new_order, name="new_order"),
    path("orders/<int:order_id>/", views.order_detail, name="order_detail"),
]
