"""The worker's pure decisions, without Redis: admission of a delivery (signature, decoding,
unknown task, lane, options against settings), expiry, and the flusher's and ledger's
accounting of finished work and places."""

from __future__ import annotations

import logging
import time

from greenq import GreenQ
from greenq.broker import Delivery
from greenq.message import Message, encode, new_id
from greenq.pools.solo import SoloPool
from greenq.worker.admission import Admission, Policy, Rejection, expired, setting
from greenq.worker.flusher import Flusher, FlushWork
from greenq.worker.lanes import Lanes, Reserved
from greenq.worker.ledger import Ledger
from greenq.worker.stats import Stats

URL = "redis://127.0.0.1:1/0"  # never connected to: nothing here talks to Redis


def _app(**settings: object) -> GreenQ:
    app = GreenQ("admission", broker=URL, **settings)

    @app.task(name="test_admission.plain")
    def plain(x: int) -> int:
        return x

    @app.task(name="test_admission.late", acks_late=True, time_limit=3)
    def late(x: int) -> int:
        return x

    @app.task(name="test_admission.crunch", cpu=True)
    def crunch(x: int) -> int:
        return x

    return app


def _delivery(task: str, *, key: str | None = None, body: bytes | None = None) -> Delivery:
    message = Message(id=new_id(), task=task, args=[1])
    return Delivery("s", "1-0", body if body is not None else encode(message, None, key), 1, "default", 0)


def test_admission_reserves_known_tasks_in_their_lane_with_resolved_ack_mode() -> None:
    app = _app()
    admission = Admission(app.tasks, app.conf, [], has_cpu_lane=True)
    plain = admission.admit(_delivery("test_admission.plain"))
    late = admission.admit(_delivery("test_admission.late"))
    crunch = admission.admit(_delivery("test_admission.crunch"))
    assert isinstance(plain, Reserved) and (plain.lane, plain.acks_late) == ("main", False)
    assert isinstance(late, Reserved) and (late.lane, late.acks_late) == ("main", True)
    assert isinstance(crunch, Reserved) and crunch.lane == "cpu"
    without_children = Admission(app.tasks, app.conf, [], has_cpu_lane=False).admit(
        _delivery("test_admission.crunch")
    )
    assert isinstance(without_children, Reserved) and without_children.lane == "main"


def test_admission_rejects_what_cannot_run_and_names_why() -> None:
    app = _app()
    admission = Admission(app.tasks, app.conf, [], has_cpu_lane=False)
    unknown = admission.admit(_delivery("test_admission.plian"))
    assert isinstance(unknown, Rejection) and unknown.reason == "unknown task 'test_admission.plian'"
    assert unknown.message is not None and unknown.message.task == "test_admission.plian"
    malformed = admission.admit(_delivery("x", body=b"{not json"))
    assert isinstance(malformed, Rejection) and malformed.reason.startswith("malformed message")
    assert malformed.message is None


def test_admission_checks_signatures_with_current_and_old_keys() -> None:
    app = _app()
    admission = Admission(app.tasks, app.conf, ["new-key", "old-key"], has_cpu_lane=False)
    assert isinstance(admission.admit(_delivery("test_admission.plain", key="new-key")), Reserved)
    assert isinstance(admission.admit(_delivery("test_admission.plain", key="old-key")), Reserved)
    forged = admission.admit(_delivery("test_admission.plain", key="other"))
    unsigned = admission.admit(_delivery("test_admission.plain"))
    for rejection in (forged, unsigned):
        assert isinstance(rejection, Rejection) and rejection.reason == "signature missing or invalid"
        assert rejection.message is not None  # its task still gets a FAILURE result


def test_routes_can_send_a_task_to_the_children() -> None:
    app = _app(task_routes={"test_admission.plain": {"pool": "prefork"}})
    admission = Admission(app.tasks, app.conf, [], has_cpu_lane=True)
    reserved = admission.admit(_delivery("test_admission.plain"))
    assert isinstance(reserved, Reserved) and reserved.lane == "cpu"


def test_a_task_option_wins_over_the_setting_and_the_setting_fills_the_gaps() -> None:
    app = _app(task_acks_late=True, task_time_limit=9.0, task_track_started=True)
    plain, late = app.tasks["test_admission.plain"], app.tasks["test_admission.late"]
    assert setting(plain, app.conf, "acks_late") is True
    assert setting(plain, app.conf, "time_limit") == 9.0
    assert setting(late, app.conf, "time_limit") == 3
    assert setting(plain, app.conf, "track_started") is True
    policy = Admission(app.tasks, app.conf, [], has_cpu_lane=False).policy(late)
    assert policy == Policy(acks_late=True, track_started=True, time_limit=3, soft_time_limit=None)


def test_expiry_is_judged_against_the_clock() -> None:
    clock = time.time()
    assert not expired(Message(id="a", task="t"), clock)
    assert not expired(Message(id="a", task="t", expires=clock + 1), clock)
    assert expired(Message(id="a", task="t", expires=clock - 1), clock)


def _flusher() -> tuple[Flusher, Ledger]:
    lanes = Lanes(SoloPool(lambda job: None), None)  # type: ignore[arg-type, return-value]
    ledger = Ledger(lanes, capacity=8)
    log = logging.LoggerAdapter(logging.getLogger("t"), {})
    flusher = Flusher(
        ledger,
        Stats(),
        log,
        consumer_id="c",
        result_ttl_ms=1000,
        max_deliveries=3,
        dead_results=lambda b, r: [],
    )
    return flusher, ledger


def test_the_flusher_batches_every_hand_off_and_frees_places_only_when_told() -> None:
    flusher, ledger = _flusher()
    ledger.held = 5
    ack = Delivery("s", "1-0", b"{}", 1, "default", 0)
    retry = (Message(id="r", task="t"), b"{}")
    flusher.put(result=("a", b"A"), release=1)
    flusher.put(result=("b", b"B"), ack=ack)
    flusher.put(delayed=retry, release=1)
    flusher.event(b"e1")
    flusher.dead_letter(ack, "failed: boom")
    flusher.nack(ack)
    assert flusher.wake.is_set()
    work = FlushWork()
    flusher.take(work)
    assert work.results == [("a", b"A"), ("b", b"B")]
    assert work.acks == [ack] and work.delayed == [retry] and work.nacks == [ack]
    assert work.events == [b"e1"] and work.dead == [(ack, "failed: boom", "c")]
    assert work.released == 2
    assert ledger.held == 5  # taking the work frees nothing: only a written round does
    flusher._release(work)
    assert (ledger.held, work.released) == (3, 0)
    again = FlushWork()
    flusher.take(again)
    assert again.empty()


def test_the_ledger_counts_places_so_finished_work_keeps_its_place_until_written() -> None:
    _, ledger = _flusher()
    message = Message(id="m", task="t")
    reserved = [Reserved(Delivery("s", f"{i}-0", b"", 1, "q", 0), message, None, False) for i in range(3)]  # type: ignore[arg-type]
    ledger.admit(reserved)
    assert (ledger.held, ledger.free(), ledger.lanes.reserved()) == (3, 5, 3)
    assert ledger.startable() == 1  # solo: one slot, nothing running yet
    taken = ledger.lanes.take(ledger.startable())
    assert len(taken) == 1 and ledger.startable() == 0  # running: its place is held
    assert ledger.orphans([("s", "0-0"), ("s", "9-0")]) == [("s", "9-0")]
    ledger.disown([taken[0].delivery])
    assert ledger.orphans([("s", "0-0")]) == [("s", "0-0")]
    assert len(ledger.take_reserved()) == 2 and ledger.held == 1
    ledger.release(1)
    assert ledger.held == 0 and ledger.startable() == 1
