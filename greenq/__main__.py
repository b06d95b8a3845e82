"""``python -m greenq``: the same entry point as the ``greenq`` console script."""

from greenq.cli import main

raise SystemExit(main())
