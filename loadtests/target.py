"""The load tests' HTTP target: ``greenq.demo.target`` served from one or more processes.

The WSGI app (``/delay/<ms>`` answers after ms with keep-alive, ``/bytes/<n>`` answers n bytes) is
``greenq.demo.target.app``, reused as is. This wrapper only adds what a load test needs on top:

* ``TCP_NODELAY`` on the listening sockets (accepted ones inherit it): ``greenq.demo.target`` alone
  answers every keep-alive request ~40 ms late (pywsgi writes headers and body separately; Nagle
  holds the body until the client's delayed ACK), so ``/delay/100`` took 144 ms instead of 105.
* ``--procs N`` serves from N processes, each with its own SO_REUSEPORT socket on the same port.
  One gevent ``pywsgi`` process spends ~0.3 ms of CPU per request (~3,400 req/s at best); 500
  connections that each wait 100 ms ask for 5,000 req/s, hence two processes on a 2-core machine.
* ``--bench`` measures what the target serves alone: a gevent client with ``--connections`` keep-alive
  connections, each sending ``GET /delay/<ms>`` back to back for ``--duration`` seconds (or ``wrk``
  with ``--tool wrk``). Loopback only, bounded in time.

Run ``python loadtests/target.py --port 8099 --procs 2``; it prints ``listening on PORT`` when every
process is serving. SIGTERM or SIGINT stops the children by PID, then the parent.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before socket, subprocess and the demo target are imported

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

import greenq.demo.target as demo  # noqa: E402


def listeners(port: int, count: int, backlog: int = 4096) -> list[socket.socket]:
    """``count`` listening sockets on 127.0.0.1:port with SO_REUSEPORT (port 0 picks a free one).

    One socket per serving process, so the kernel spreads new connections evenly across them; a
    single shared socket lets whichever process wakes first accept most of a burst of connections.
    """
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted sockets inherit TCP_NODELAY on Linux. Without it, pywsgi's separate writes of
        # headers and body meet the client's delayed ACK: +40 ms on every keep-alive response.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", port or (socks[0].getsockname()[1] if socks else 0)))
        sock.listen(backlog)
        socks.append(sock)
    return socks


def _exit_with_parent(parent: int) -> None:
    """A child leaves when its parent is gone (e.g. SIGKILLed), so nothing outlives a run."""
    while os.getppid() == parent:
        gevent.sleep(1.0)
    os._exit(0)


def serve(port: int = 0, procs: int = 1) -> None:
    """Serve ``greenq.demo.target.app`` from ``procs`` processes until SIGTERM/SIGINT."""
    socks = listeners(port, procs)
    parent = os.getpid()
    children: list[int] = []
    for index in range(1, procs):
        pid = os.fork()  # gevent's fork: the child gets a fresh hub
        if pid == 0:
            for other in socks[:index] + socks[index + 1 :]:
                other.close()
            gevent.spawn(_exit_with_parent, parent)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards what it gets
            WSGIServer(socks[index], demo.app, log=None).serve_forever()
            os._exit(0)
        children.append(pid)
    for other in socks[1:]:
        other.close()
    server = WSGIServer(socks[0], demo.app, log=None)
    server.start()

    def stop() -> None:
        server.close()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    print(
        f"listening on {socks[0].getsockname()[1]} ({procs} processes, pids {[parent, *children]})",
        flush=True,
    )
    server.serve_forever()


# ---- measuring the target alone --------------------------------------------------------------------


def _client(port: int, path: str, deadline: float, counts: list[int], errors: list[str]) -> None:
    """One keep-alive connection sending GETs back to back; counts complete 200 answers."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            buffer = b""
            while time.monotonic() < deadline:
                sock.sendall(request)
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += sock.recv(65536)
                buffer = buffer[length:]
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
                counts[0] += 1
    except (OSError, ConnectionError, StopIteration) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def bench_gevent(port: int, connections: int, delay_ms: int, duration_s: float) -> dict[str, object]:
    """Requests/s the target on ``port`` serves to ``connections`` gevent keep-alive clients."""
    path = f"/delay/{delay_ms}"
    warmup: list[int] = [0]
    gevent.joinall(
        [gevent.spawn(_client, port, path, time.monotonic() + 1.0, warmup, []) for _ in range(connections)]
    )
    counts: list[int] = [0]
    errors: list[str] = []
    started = time.monotonic()
    deadline = started + duration_s
    gevent.joinall([gevent.spawn(_client, port, path, deadline, counts, errors) for _ in range(connections)])
    elapsed = time.monotonic() - started
    return {
        "tool": "gevent client (one process, raw sockets)",
        "connections": connections,
        "delay_ms": delay_ms,
        "duration_s": round(elapsed, 2),
        "requests": counts[0],
        "req_per_s": round(counts[0] / elapsed, 1),
        "ideal_req_per_s": round(connections * 1000 / delay_ms, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def bench_wrk(port: int, connections: int, delay_ms: int, duration_s: float) -> dict[str, object]:
    """The same measurement with ``wrk`` (one thread), when it is installed."""
    url = f"http://127.0.0.1:{port}/delay/{delay_ms}"
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration_s)}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30, check=True).stdout
    rate = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec"))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    return {
        "tool": "wrk -t1",
        "connections": connections,
        "delay_ms": delay_ms,
        "duration_s": duration_s,
        "req_per_s": rate,
        "ideal_req_per_s": round(connections * 1000 / delay_ms, 1),
        "errors": errors,
        "output": out,
    }


def bench(procs: int, connections: int, delay_ms: int, duration_s: float, tool: str) -> dict[str, object]:
    """Start the target as a child process, measure it, stop it by PID."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--procs", str(procs)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"target did not start: {line!r}")
        port = int(line.split()[2])
        if tool == "wrk":
            result = bench_wrk(port, connections, delay_ms, duration_s)
        else:
            result = bench_gevent(port, connections, delay_ms, duration_s)
        result["target_procs"] = procs
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--procs", type=int, default=2, help="serving processes (default 2)")
    parser.add_argument("--bench", action="store_true", help="measure the target alone and print JSON")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--tool", choices=["gevent", "wrk"], default="gevent")
    args = parser.parse_args()
    if args.bench:
        if args.tool == "wrk" and not shutil.which("wrk"):
            parser.error("wrk is not installed (apt-get install wrk), use --tool gevent")
        result = bench(args.procs, args.connections, args.delay_ms, args.duration, args.tool)
        result.pop("output", None)
        print(json.dumps(result))
        return
    serve(args.port, args.procs)


if __name__ == "__main__":
    main()
