"""``greenq demo``: a local HTTP target, a gevent worker and a few thousand HTTP tasks."""
