"""The chaos checker's chain rules (scripts/chaos/checker.py), on histories written by hand:
a step that starts before the step before has its final result, and a step lost after a
successful one, are violations; a step run twice because the step before ran twice (explained
by a fault) is explained too. The chaos run itself (tests/test_chaos.py) checks real chains."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from chaos.checker import Checker

KILLED, ALIVE = 4242, 5151  # worker pids: consumer names end in pid:serial


def _step(task_id: str, step: int) -> dict[str, Any]:
    return {"id": task_id, "kind": "chain", "status": "ok", "added": True, "chain": "a", "step": step}


def _run(task_id: str, t: float, delivery: int = 1, pid: int = ALIVE) -> dict[str, Any]:
    worker = f"w:host:{pid}:1"
    return {
        "ev": "start",
        "id": task_id,
        "task": "late",
        "r": 0,
        "d": delivery,
        "t": t,
        "pid": pid,
        "w": worker,
    }


def _checker(
    tmp_path: Path,
    runs: list[dict[str, Any]],
    done: dict[str, float],
    killed: bool = False,
    seen: bool = True,  # the listener noted each final
) -> Checker:
    ledger = tmp_path / "ledger"
    ledger.mkdir(parents=True)
    (ledger / "run-1.jsonl").write_bytes(b"".join(orjson.dumps(run) + b"\n" for run in runs))
    faults = [
        {"kind": "kill", "pid": KILLED, "capacity": 8, "concurrency": 2, "t0": 0, "t1": 0, "detail": {}}
    ]
    data = {
        "records": [_step("a", 0), _step("b", 1), _step("c", 2)],
        "finals": {task_id: [["SUCCESS", at, None]] for task_id, at in done.items()} if seen else {},
        "results": {
            task_id: {"state": "SUCCESS", "date_done": at, "first_final_at": at}
            for task_id, at in done.items()
        },
        "faults": faults if killed else [],
        "lost_timeout_s": 3.0,
        "capacities": {"w": 8},
    }
    checker = Checker(data, tmp_path)
    checker.check_runs()
    checker.check_chains()
    return checker


def test_steps_in_order_with_every_result_pass(tmp_path: Path) -> None:
    checker = _checker(
        tmp_path, [_run("a", 1.0), _run("b", 3.0), _run("c", 5.0)], {"a": 2.0, "b": 4.0, "c": 6.0}
    )
    assert checker.v.violations == []
    assert checker.v.figures["chains"] == 1 and checker.v.figures["chain_steps"] == 3


def test_a_step_started_before_the_step_before_had_its_result_is_a_violation(tmp_path: Path) -> None:
    checker = _checker(
        tmp_path, [_run("a", 1.0), _run("b", 1.5), _run("c", 5.0)], {"a": 2.0, "b": 4.0, "c": 6.0}
    )
    assert len(checker.v.violations) == 1
    assert checker.v.violations[0].startswith(
        "chain steps that started before the step before had its result: 1 (b"
    )


def test_a_step_lost_after_a_successful_one_is_a_violation(tmp_path: Path) -> None:
    checker = _checker(tmp_path, [_run("a", 1.0), _run("b", 3.0)], {"a": 2.0, "b": 4.0})
    assert checker.v.violations == ["chain steps lost after the step before succeeded: 1 (c (step 2))"]


def test_a_step_run_twice_because_the_step_before_ran_twice_is_explained(tmp_path: Path) -> None:
    # a's first worker was SIGKILLed: a runs again (explained), writes its result again and so
    # sends b again; b's second run is explained by a's, and c's by b's.
    runs = [_run("a", 1.0, pid=KILLED), _run("a", 1.2, 2)]
    runs += [_run("b", 3.0), _run("b", 3.1), _run("c", 5.0), _run("c", 5.1)]  # on a live worker
    checker = _checker(tmp_path, runs, {"a": 2.0, "b": 4.0, "c": 6.0}, killed=True)
    assert checker.v.violations == []
    assert checker.explained_ids == {"a", "b", "c"}
    unexplained = _checker(tmp_path / "no-fault", runs, {"a": 2.0, "b": 4.0, "c": 6.0})
    assert unexplained.v.violations[0].startswith("late-ack duplicates no fault explains: 3")


def test_the_first_final_record_counts_when_the_listener_missed_it(tmp_path: Path) -> None:
    # a ran twice: its result stream holds two finals; the listener saw neither (it reads the
    # newest record when notified), and the stored newest one is later than b's start
    runs = [_run("a", 1.0, pid=KILLED), _run("a", 1.1, 2), _run("b", 2.05), _run("c", 5.0)]
    checker = _checker(tmp_path, runs, {"a": 2.0, "b": 4.0, "c": 6.0}, killed=True, seen=False)
    checker.d["results"]["a"]["date_done"] = 2.1  # the second run's record
    checker.v.violations.clear()
    checker.check_chains()
    assert checker.v.violations == []
