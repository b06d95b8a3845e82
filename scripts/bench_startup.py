#!/usr/bin/env python
"""Worker start-up, step by step: spawn → first task done, greenq beside Celery (issue 25).

    python scripts/bench_startup.py [--runs 9] [--body incr|fetch] [--tasks N]
        [--variants greenq,hybrid,celery] [--callgrind STEP,...] [--importtime]

Each run pre-fills the bench queue with ``--tasks`` tasks of one body of ``scripts/bench_tasks.py``
(``incr``: the drain, 20,000 by default; ``fetch``: the http row, a requests GET of /delay/100,
10,000), spawns one worker at ``-c 500`` as ``scripts/bench.py`` does, and takes, from this
process, the spawn, the first task taken off the queue (the backlog drops) and the first task
done (the drain's counter moves, or one of the first 500 results exists), polled every 1 ms,
with the worker's CPU seconds at each (from /proc: 10 ms ticks). Variants: ``greenq`` (the bench's
app module), ``hybrid`` (the same module with a ``cpu=True`` task defined, none queued),
``celery``; ``NAME@PATH`` runs NAME with the ``greenq/`` package found under PATH (an A/B of two
checkouts in one run); each variant's ``greenq/`` is byte-compiled first, as pip compiles an
installed package. Medians over ``--runs`` interleaved runs.

A greenq worker also reports its steps from inside (``STEPS``): it is started through this file
(``child`` mode), which wraps a few greenq functions as their modules are imported and appends
``<step> <monotonic s> <process CPU s>`` to the file in ``BENCH_STARTUP_MARKS``; the monotonic
clock is system-wide, so each step is timed from the spawn. ``BENCH_STARTUP_EXIT_AT=STEP`` makes
the child exit at that step, and ``BENCH_STARTUP_PROFILE_UNTIL=STEP`` writes a cProfile of the
start-up up to it next to the marks file.

``--callgrind STEP,...`` runs each greenq variant once per step under ``valgrind
--tool=callgrind``, exiting at the step: instructions executed from the interpreter's start,
which, unlike times on a shared machine, repeat from run to run. ``--importtime`` runs each greenq
variant once with ``python -X importtime`` and prints its heaviest imports.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

T0 = time.monotonic(), time.process_time()  # child mode: the interpreter is up (site imported)

# (step, module, function, "before" or "after" its first call that counts), in a worker's order
STEPS = (
    ("patched", "greenq.pools.gevent", "patch", "after"),
    ("app imported", "greenq.loader", "load_app", "after"),
    ("worker modules imported", "greenq.worker.main", "run_worker", "before"),
    ("pools made", "greenq.worker.main", "make_cpu_pool", "after"),
    ("consumer made", "greenq.worker.consumer", "Consumer.__init__", "after"),
    ("registered", "greenq.worker.lifecycle", "Lifecycle._register", "after"),
    ("loops started", "greenq.worker.lifecycle", "Lifecycle.start", "after"),
    ("first fetch", "greenq.broker.channel", "Channel.reserve", "after"),  # one that reserved
    ("first admitted", "greenq.worker.ledger", "Ledger.admit", "after"),
    ("first start.lua", "greenq.broker.channel", "Channel.start_batch", "after"),
    ("first task started", "greenq.worker.execute", "execute", "before"),
    ("first task done", "greenq.worker.execute", "execute", "after"),
    ("first flush", "greenq.broker.channel", "Channel.flush", "after"),
)
SEEN = ("first taken (seen)", "first done (seen)")  # what the bench process sees in Redis
SCRIPTS = os.path.dirname(os.path.abspath(__file__))
POLL_S = 0.001

# ---- child mode: a greenq worker that writes its start-up steps ----------------------------


class _Marks:
    """Appends each step's first time to the file named by ``BENCH_STARTUP_MARKS``."""

    def __init__(self, path: str) -> None:
        self.path, self.seen, self.profile = path, set(), None
        if os.environ.get("BENCH_STARTUP_PROFILE_UNTIL"):
            import cProfile

            self.profile = cProfile.Profile()
            self.profile.enable()
        self.write("python up", *T0)

    def write(self, name: str, wall: float | None = None, cpu: float | None = None) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        wall, cpu = wall or time.monotonic(), cpu or time.process_time()
        with open(self.path, "a") as out:
            out.write(f"{name}\t{wall:.6f}\t{cpu:.6f}\n")
        if name == os.environ.get("BENCH_STARTUP_PROFILE_UNTIL") and self.profile is not None:
            self.profile.disable()
            self.profile.dump_stats(self.path + ".prof")
        if name == os.environ.get("BENCH_STARTUP_EXIT_AT"):
            os._exit(0)  # under callgrind: the instructions up to this step

    def wrap(self, function: Any, name: str, when: str) -> Any:
        import functools

        counts = (lambda result: bool(result[0])) if function.__name__ == "reserve" else (lambda _: True)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if when == "before":
                self.write(name)
            result = function(*args, **kwargs)
            if when == "after" and counts(result):
                self.write(name)
            return result

        return wrapper


class _AfterImport:
    """A meta path finder that wraps the steps' functions as their modules finish executing."""

    def __init__(self, marks: _Marks) -> None:
        self.marks = marks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        steps = [step for step in STEPS if step[1] == name]
        if not steps:
            return None
        for finder in sys.meta_path:
            if finder is not self and (spec := finder.find_spec(name, path, target)) is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            for step, _, attribute, when in steps:
                owner, _, leaf = attribute.rpartition(".")
                holder = getattr(module, owner) if owner else module
                setattr(holder, leaf, self.marks.wrap(getattr(holder, leaf), step, when))

        spec.loader.exec_module = exec_module
        return spec


def child(argv: list[str]) -> int:
    """Run ``greenq <argv>`` with the steps written to ``BENCH_STARTUP_MARKS``."""
    sys.meta_path.insert(0, _AfterImport(_Marks(os.environ["BENCH_STARTUP_MARKS"])))
    sys.argv = ["greenq", *argv]
    from greenq.cli import main as greenq_main

    return greenq_main(argv)


# ---- the bench process ---------------------------------------------------------------------


def prefill(url: str, framework: str, body: str, n: int, arg: tuple[Any, ...]) -> list[str]:
    import bench_tasks as tasks

    if framework == "greenq":
        app = tasks.make_greenq_app(url)
        try:
            return [r.id for r in app.tasks[f"bench.{body}"].map([arg] * n)]
        finally:
            app.close()
    app = tasks.make_celery_app(url)
    try:
        with app.producer_or_acquire() as producer:
            return [app.tasks[f"bench.{body}"].apply_async(arg, producer=producer).id for _ in range(n)]
    finally:
        app.close()


def worker_argv(framework: str, python: list[str]) -> list[str]:
    common = ["-c", "500", "-Q", "bench", "-l", "WARNING"]
    if framework == "celery":
        args = ["-m", "celery", "-A", "bench_tasks:celery", "worker", "-P", "gevent"]
        return [*python, *args, "--without-gossip", "--without-mingle", "--without-heartbeat", *common]
    args = ["child", "worker", "-A", "bench_tasks", "--pool", "gevent"]
    return [*python, os.path.abspath(__file__), *args, *common]


class Bench:
    def __init__(self, url: str, body: str, n: int, delay_url: str) -> None:
        import redis

        self.url, self.body, self.n, self.delay_url = url, body, n, delay_url
        self.r = redis.Redis.from_url(url)

    def prepare(self, variant: str, marks: str) -> tuple[str, list[str], dict[str, str]]:
        """FLUSHALL, pre-fill; (framework, task ids, the worker's environment)."""
        self.r.flushall()
        name, _, source = variant.partition("@")
        framework = "celery" if name == "celery" else "greenq"
        ids = prefill(
            self.url, framework, self.body, self.n, (self.delay_url,) if self.body == "fetch" else ()
        )
        env = dict(
            os.environ, BENCH_REDIS_URL=self.url, GREENQ_BROKER_URL=self.url, BENCH_FRAMEWORK=framework
        )
        env |= {"BENCH_HYBRID": "1" if name == "hybrid" else "", "BENCH_STARTUP_MARKS": marks}
        if source:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        return framework, ids, env

    def probes(self, framework: str, ids: list[str]) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
        """The commands that read the backlog, and the one that says a first task is done."""
        import bench_tasks as tasks

        from greenq.broker.keys import Keys

        if framework == "greenq":
            backlog: list[tuple[Any, ...]] = [("XLEN", Keys.stream(tasks.QUEUE))]
            results = [Keys.result(i) for i in ids[:500]]
        else:
            backlog = [("LLEN", tasks.QUEUE), ("HLEN", "unacked")]
            results = [f"celery-task-meta-{i}" for i in ids[:500]]
        return backlog, ("GET", tasks.COUNTER) if self.body == "incr" else ("EXISTS", *results)

    def run(self, variant: str) -> dict[str, float]:
        """One worker on a pre-filled queue: each step's seconds from the spawn (``step``) and the
        worker's CPU seconds then (``step (cpu)``)."""
        import subprocess
        import tempfile

        from bench_tasks import process_cpu_s

        handle, marks = tempfile.mkstemp(prefix="greenq-startup-", suffix=".tsv")
        os.close(handle)
        framework, ids, env = self.prepare(variant, marks)
        backlog, first_done = self.probes(framework, ids)
        steps: dict[str, float] = {}
        with tempfile.TemporaryFile() as log:
            spawned = time.monotonic()
            argv = worker_argv(framework, [sys.executable])
            proc = subprocess.Popen(argv, cwd=SCRIPTS, env=env, stdout=log, stderr=log)
            try:
                while SEEN[1] not in steps:
                    pipe = self.r.pipeline(transaction=False)
                    for command in (*backlog, first_done):
                        pipe.execute_command(*command)
                    *lengths, done = pipe.execute()
                    clock = time.monotonic()
                    seen = []
                    if SEEN[0] not in steps and sum(int(x or 0) for x in lengths) < self.n:
                        seen.append(SEEN[0])
                    if int(done or 0) >= 1:
                        seen.append(SEEN[1])
                    for step in seen:
                        steps[step], steps[f"{step} (cpu)"] = clock - spawned, process_cpu_s(proc.pid)
                    if proc.poll() is not None or clock > spawned + 60:
                        log.seek(0)
                        raise RuntimeError(
                            f"{variant}: the worker exited or took 60 s: {log.read()[-2000:]!r}"
                        )
                    time.sleep(POLL_S)
            finally:
                if proc.poll() is None:  # stopped by PID, as every child of the bench
                    proc.terminate()
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        if os.path.exists(marks):
            with open(marks) as lines:
                for line in lines:
                    name, wall, cpu = line.rstrip("\n").split("\t")
                    steps[name], steps[f"{name} (cpu)"] = float(wall) - spawned, float(cpu)
            os.unlink(marks)
        return steps

    def instructions(self, variant: str, step: str) -> int:
        """Instructions a greenq worker executes from its start to ``step`` (callgrind)."""
        import re
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory(prefix="greenq-callgrind-") as scratch:
            _, _, env = self.prepare(variant, os.path.join(scratch, "marks"))
            env |= {"BENCH_STARTUP_EXIT_AT": step, "PYTHONHASHSEED": "0"}
            valgrind = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={scratch}/out",
                "--dump-instr=no",
            ]
            run = subprocess.run(
                worker_argv("greenq", [*valgrind, sys.executable]),
                cwd=SCRIPTS,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
        found = re.search(r"Collected : (\d+)", run.stderr)
        if not found:
            raise RuntimeError(f"callgrind to {step!r}: {run.stderr[-2000:]}")
        return int(found.group(1))

    def importtime(self, variant: str) -> list[tuple[int, int, str]]:
        """(cumulative us, self us, module) of the heaviest imports up to the first task started."""
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory(prefix="greenq-importtime-") as scratch:
            _, _, env = self.prepare(variant, os.path.join(scratch, "marks"))
            env["BENCH_STARTUP_EXIT_AT"] = "first task started"
            argv = worker_argv("greenq", [sys.executable, "-X", "importtime"])
            run = subprocess.run(argv, cwd=SCRIPTS, env=env, capture_output=True, text=True, timeout=120)
        rows = []
        for line in run.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                own, cumulative, name = line.split(":", 1)[1].split("|")
                rows.append((int(cumulative), int(own), name.rstrip()))
        return sorted(rows, reverse=True)[:30]


def median_cell(values: list[float], cpu: list[float]) -> str:
    import statistics

    if not values:
        return ""
    text = f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
    return text + (f", CPU {statistics.median(cpu):.3f}" if cpu else "")


def main() -> int:
    import argparse

    if len(sys.argv) > 1 and sys.argv[1] == "child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--body", choices=("incr", "fetch"), default="incr")
    parser.add_argument("--tasks", type=int, help="default 20,000 (incr) or 10,000 (fetch), as bench.py")
    parser.add_argument(
        "--variants", default="greenq,hybrid,celery", help="greenq, hybrid, celery, NAME@PATH"
    )
    parser.add_argument("--callgrind", help="comma-separated steps: instructions up to each (greenq only)")
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    n = args.tasks or (20_000 if args.body == "incr" else 10_000)
    variants = args.variants.split(",")
    import compileall

    for variant in variants:  # byte-compiled, as an installed package is (PYTHONDONTWRITEBYTECODE)
        source = variant.partition("@")[2] or os.path.dirname(SCRIPTS)
        compileall.compile_dir(os.path.join(source, "greenq"), quiet=1)
    sys.path.insert(0, SCRIPTS)
    import subprocess
    import tempfile

    from greenq.embedded import RedisServer, bundled_binary, free_port

    server = RedisServer(binary=bundled_binary(), data_dir=tempfile.mkdtemp(prefix="greenq-startup-")).start()
    target = None
    try:
        delay_url = ""
        if args.body == "fetch":
            port = free_port()
            command = [sys.executable, "-m", "greenq.demo.target", "--port", str(port)]
            target = subprocess.Popen(command, stdout=subprocess.PIPE)
            assert target.stdout is not None and b"listening" in target.stdout.readline()
            delay_url = f"http://127.0.0.1:{port}/delay/100"
        bench = Bench(server.url, args.body, n, delay_url)
        report(bench, args, variants)
    finally:
        if target is not None:
            target.terminate()
            target.wait(10)
        server.stop()
    return 0


def report(bench: Bench, args: Any, variants: list[str]) -> None:
    greenqs = [v for v in variants if not v.startswith("celery")]
    header = f"| step | {' | '.join(variants)} |\n|---|{'--:|' * len(variants)}"
    if args.runs:
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for index in range(args.runs):
            for variant in variants:
                runs[variant].append(bench.run(variant))
            print(f"run {index + 1}/{args.runs} done", file=sys.stderr, flush=True)
        print(
            f"\nspawn → step, s: median of {args.runs} runs (min-max), the worker's CPU s then; {args.body}"
        )
        print(header)
        for step in ["python up", *(s[0] for s in STEPS), *SEEN]:
            cells = [
                median_cell(
                    [r[step] for r in runs[v] if step in r],
                    [r[f"{step} (cpu)"] for r in runs[v] if step in r],
                )
                for v in variants
            ]
            if any(cells):
                print(f"| {step} | {' | '.join(cells)} |")
    if args.callgrind:
        print(f"\ninstructions from the start (millions, callgrind); {args.body}")
        print(f"| step | {' | '.join(greenqs)} |\n|---|{'--:|' * len(greenqs)}")
        for step in args.callgrind.split(","):
            counts = [bench.instructions(v, step) / 1e6 for v in greenqs]
            print(f"| {step} | {' | '.join(f'{c:,.0f}' for c in counts)} |", flush=True)
    if args.importtime:
        for variant in greenqs:
            print(f"\nheaviest imports up to the first task, {variant} (cumulative us, self us, module):")
            for cumulative, own, name in bench.importtime(variant):
                print(f"{cumulative:>9,} {own:>9,} {name}")


if __name__ == "__main__":
    sys.exit(main())
