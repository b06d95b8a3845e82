"""Entry point: the pool contract checks on GeventPool in a patched interpreter, as a gevent
worker runs it. ``python -m tests.pools.patched_contract DIR``; tests/pools/test_contract.py reads
the JSON it prints."""

from greenq.pools.gevent import patch

patch()  # first, as `greenq worker --pool gevent` does, before threading or time are used

import sys  # noqa: E402

from tests.pools.contract import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1])
