"""A small TCP proxy between workers and Redis that can cut, delay and stall their connections.

Run as its own process (so the chaos driver's threads never slow it down):
``python scripts/chaos/proxy.py LISTEN_PORT TARGET_PORT``. It prints ``ready`` once it listens,
then obeys one command per line on stdin:

* ``cut``           close every open connection at once (both sides see a reset);
* ``delay S D``     for D seconds, hold every chunk S seconds before forwarding it;
* ``stall D``       for D seconds, forward nothing (connections stay open, bytes wait);
* ``quit``          stop.

No root, no iptables: the workers' broker URL points here instead of at Redis.
"""

from __future__ import annotations

import asyncio
import sys
import time


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: set[asyncio.StreamWriter] = set()
        self.delay_s = 0.0
        self.delay_until = 0.0
        self.stall_until = 0.0

    async def gate(self) -> None:
        """Wait out a stall, then the delay in force."""
        while True:
            left = self.stall_until - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.05))
        if self.delay_until > time.monotonic():
            await asyncio.sleep(self.delay_s)

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.gate()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()  # Redis is down: the client sees the connection close
            return
        self.writers.update((client_w, server_w))
        try:
            await asyncio.gather(self.pump(client_r, server_w), self.pump(server_r, client_w))
        finally:
            self.writers.discard(client_w)
            self.writers.discard(server_w)

    def cut(self) -> None:
        for writer in list(self.writers):
            transport = writer.transport
            transport.abort()
        self.writers.clear()

    def command(self, line: str) -> bool:
        parts = line.split()
        if not parts:
            return True
        if parts[0] == "cut":
            self.cut()
        elif parts[0] == "delay":
            self.delay_s = float(parts[1])
            self.delay_until = time.monotonic() + float(parts[2])
        elif parts[0] == "stall":
            self.stall_until = time.monotonic() + float(parts[1])
        elif parts[0] == "quit":
            return False
        return True


async def main(listen_port: int, target_port: int) -> None:
    proxy = Proxy(target_port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", listen_port)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print("ready", flush=True)
    async with server:
        while True:
            line = await stdin.readline()
            if not line or not proxy.command(line.decode()):
                break
    proxy.cut()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
