"""A PostgreSQL server of the test process's own, as the suite starts its own Redis: ``initdb``
in a temp directory, ``postgres`` on a free port of 127.0.0.1 (trust auth, no fsync), database
``test``; stopped by PID. The binaries come from PATH or Debian's ``/usr/lib/postgresql/*/bin``
(``.ci/run`` installs the ``postgresql`` package when there are none). PostgreSQL refuses to
run as root: as root, the server runs as the ``postgres`` user the package creates."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from greenq.embedded import free_port

MISSING = (
    "PostgreSQL's initdb/postgres binaries were not found (PATH, /usr/lib/postgresql/*/bin): "
    "install PostgreSQL (Debian: apt-get install postgresql) to run the PostgreSQL variants"
)


def _binaries() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise AssertionError(MISSING)
    return Path(candidates[-1]).parent


class PostgresServer:
    """``dsn`` (libpq keywords) of database ``test``; ``host``/``port`` for Django."""

    def __init__(self) -> None:
        bin_dir = _binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="greenq-pg-"))
        self.host, self.port = "127.0.0.1", free_port()
        data = self.folder / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            self._as = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")
        init = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        done = subprocess.run([*self._as, *init], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"initdb failed: {done.stdout}{done.stderr}"
        options = [
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            f"unix_socket_directories={self.folder}",
        ]
        self.proc = subprocess.Popen(
            [
                *self._as,
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={self.host}",
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "log", "wb"),  # noqa: SIM115 - the server's whole life
        )
        self.dsn = f"host={self.host} port={self.port} user=postgres dbname=test connect_timeout=3"
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(
                    self.dsn.replace("dbname=test", "dbname=postgres"), autocommit=True
                ) as conn:
                    conn.execute("CREATE DATABASE test")
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise AssertionError(f"PostgreSQL did not start: {log}") from None
                time.sleep(0.1)  # the server's readiness has no event to wait on from here

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # runuser passes SIGTERM on: a smart shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
