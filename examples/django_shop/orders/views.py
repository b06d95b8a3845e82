"""Views: save an order and enqueue its confirmation when the transaction commits."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt

from orders.models import Order
from orders.tasks import confirm_order


@csrf_exempt  # an example without sessions or auth; keep CSRF protection in a real project
def new_order(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        with transaction.atomic():
            order = Order.objects.create(
                item=request.POST.get("item") or "book", quantity=int(request.POST.get("quantity") or 1)
            )
            # Sent when the block commits, never if it rolls back.
            result = confirm_order.delay_on_commit(order.pk)
        response = redirect("order_detail", order_id=order.pk)
        response["X-Task-Id"] = result.id
        return response
    return render(request, "orders/new.html", {"orders": Order.objects.order_by("-pk")[:10]})


def order_detail(request: HttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(Order, pk=order_id)
    return render(request, "orders/detail.html", {"order": order})
