"""CPU cost of message signing: encode with and without HMAC-SHA256, and verify, per message.

python scripts/signing_cost.py [--n 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from greenq.message import Message, encode, verify


def per_call_us(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    message = Message(
        id="0" * 32,
        task="shop.tasks.ping",
        args=("https://example.org/item/42",),
        kwargs={"retries": 3},
        created=time.time(),
    )
    plain = per_call_us(lambda: encode(message, 1 << 20), args.n)
    signed = per_call_us(lambda: encode(message, 1 << 20, "k" * 32), args.n)
    body = encode(message, None, "k" * 32)
    check = per_call_us(lambda: verify(body, ["k" * 32]), args.n)
    print(
        f"encode {plain:.2f} us, encode+sign {signed:.2f} us (+{signed - plain:.2f} us), "
        f"verify {check:.2f} us per message ({len(body)} bytes)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
