"""The django_shop project: settings, URLs and the greenq app (``shop.greenq_app``)."""
