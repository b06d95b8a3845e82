"""A worker app with a receiver on every signal, a task class overriding every handler, and an
OpenTelemetry SDK tracer whose finished spans go to Redis: the evidence the hook tests read.

Every receiver and handler first records what it was called with (``record``: a JSON entry
on the Redis list ``ev:<name>``), then a second receiver on the same signal, and the handler
itself, raise: the tests check that the outcome is the same as without them. Only imported by
worker processes and by the producer subprocess (``python -m tests.hooks.hook_app``), never by
the pytest process, whose signals and tracer provider would otherwise stay set for other tests.
The broker and the evidence Redis come from GREENQ_BROKER_URL.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from greenq import GreenQ, signals

app = GreenQ("hooks")
user_log = logging.getLogger("hooks.user")
_client: list[redis.Redis] = []


def client() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(os.environ["GREENQ_BROKER_URL"]))
    return _client[0]


def record(name: str, **fields: Any) -> None:
    fields["pid"] = os.getpid()
    client().rpush(f"ev:{name}", json.dumps(fields, default=repr))


def evidence(r: redis.Redis, name: str) -> list[dict[str, Any]]:
    """What the receivers of ``name`` recorded, in order (read by the tests)."""
    return [json.loads(raw) for raw in r.lrange(f"ev:{name}", 0, -1)]


# ---- tracing: the SDK's in-memory exporter, copied to Redis as each span ends ----------------


class RedisSpanExporter(InMemorySpanExporter):
    def export(self, spans: Any) -> Any:
        for span in spans:
            parent = span.parent
            client().rpush(
                "spans",
                json.dumps(
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": f"{span.context.trace_id:032x}",
                        "span_id": f"{span.context.span_id:016x}",
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                        "pid": os.getpid(),
                    }
                ),
            )
        return super().export(spans)


def setup_tracing(**_: Any) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedisSpanExporter()))
    trace.set_tracer_provider(provider)


setup_tracing()


# ---- a receiver on every signal, and one that raises ------------------------------------------


def _name(sender: Any) -> Any:
    return getattr(sender, "name", sender)


def on_publish(sender: Any, body: Any, exchange: str, routing_key: str, headers: dict, **kw: Any) -> None:
    signal = kw["signal"].name
    record(signal, sender=sender, body=body, routing_key=routing_key, headers=headers, extra=sorted(kw))
    if signal == "before_task_publish":
        headers["request_id"] = f"req-{headers['id']}"  # propagated to task.request.request_id


def on_prerun(sender: Any, task_id: str, task: Any, args: Any, kwargs: Any, **_: Any) -> None:
    record("task_prerun", sender=_name(sender), task_id=task_id, task=task.name, args=args, kwargs=kwargs)


def on_postrun(
    sender: Any, task_id: str, task: Any, args: Any, kwargs: Any, retval: Any, state: str, **_: Any
) -> None:
    record(
        "task_postrun",
        sender=_name(sender),
        task_id=task_id,
        task=task.name,
        args=args,
        retval=retval,
        state=state,
    )


def on_success(sender: Any, result: Any, **_: Any) -> None:
    record("task_success", sender=_name(sender), task_id=sender.request.id, result=result)


def on_failure(
    sender: Any,
    task_id: str,
    exception: BaseException,
    args: Any,
    kwargs: Any,
    traceback: Any,
    einfo: Any,
    **_: Any,
) -> None:
    record(
        "task_failure",
        sender=_name(sender),
        task_id=task_id,
        exception=f"{type(exception).__name__}: {exception}",
        args=args,
        kwargs=kwargs,
        traceback=type(traceback).__name__,
        einfo=einfo.type.__name__,
        einfo_text="Traceback" in einfo.traceback,
    )


def on_retry(sender: Any, request: Any, reason: Any, einfo: Any, **_: Any) -> None:
    record(
        "task_retry",
        sender=_name(sender),
        task_id=request.id,
        retries=request.retries,
        reason=type(reason).__name__,
        exc=f"{type(reason.exc).__name__}: {reason.exc}",
        einfo=einfo.type.__name__,
    )


def on_revoked(sender: Any, request: Any, terminated: bool, signum: Any, expired: bool, **_: Any) -> None:
    record(
        "task_revoked",
        sender=_name(sender),
        task_id=request.id,
        task=request.task,
        terminated=terminated,
        signum=signum,
        expired=expired,
    )


def on_rejected(sender: Any, message: Any, exc: Any, **_: Any) -> None:
    record("task_rejected", sender=type(sender).__name__, body=message.body.decode(), exc=str(exc))


def on_worker(sender: Any, **kw: Any) -> None:
    record(kw["signal"].name, sender=type(sender).__name__, consumer=getattr(sender, "consumer_id", None))


def raising(**kw: Any) -> None:
    raise RuntimeError(f"receiver boom on {kw['signal'].name}")


signals.before_task_publish.connect(on_publish)
signals.after_task_publish.connect(on_publish)
signals.task_prerun.connect(on_prerun)
signals.task_postrun.connect(on_postrun)
signals.task_success.connect(on_success)
signals.task_failure.connect(on_failure)
signals.task_retry.connect(on_retry)
signals.task_revoked.connect(on_revoked)
signals.task_rejected.connect(on_rejected)
for _signal in (
    signals.worker_init,
    signals.worker_ready,
    signals.worker_process_init,
    signals.worker_shutdown,
):
    _signal.connect(on_worker)
signals.heartbeat_sent.connect(on_worker)
for _signal in signals.ALL.values():
    _signal.connect(raising)


# ---- a task class with every handler: it records, then raises ---------------------------------


class Audited(app.Task):
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        record("before_start", task=self.name, task_id=task_id, args=args, kwargs=kwargs)
        raise RuntimeError("handler boom")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        record("on_success", task=self.name, retval=retval, task_id=task_id, args=args, kwargs=kwargs)
        raise RuntimeError("handler boom")

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        record(
            "on_failure",
            task=self.name,
            exc=f"{type(exc).__name__}: {exc}",
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            einfo=einfo.type.__name__,
        )
        raise RuntimeError("handler boom")

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        record(
            "on_retry",
            task=self.name,
            exc=f"{type(exc).__name__}: {exc}",
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            einfo=einfo.type.__name__,
        )
        raise RuntimeError("handler boom")

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        record(
            "after_return",
            task=self.name,
            status=status,
            retval=retval if status == "SUCCESS" else type(retval).__name__,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            einfo=einfo.type.__name__ if einfo is not None else None,
        )
        raise RuntimeError("handler boom")


def _tasks(cpu: bool, suffix: str) -> None:
    """The same four tasks for the worker's own pool and (``cpu=True``) for hybrid children."""

    def add(a: int, b: int) -> int:
        user_log.info("adding %s and %s", a, b)
        return a + b

    def boom(x: int) -> None:
        raise ValueError(f"boom {x}")

    def flaky(self: Any, tag: str) -> list:
        if self.request.retries == 0:
            raise self.retry(exc=KeyError(tag), countdown=0)
        return [tag, self.request.retries, self.request.request_id, os.getpid()]

    for fn in (add, boom, flaky):
        app.task(name=f"hooks.{fn.__name__}{suffix}", base=Audited, cpu=cpu, bind=fn is flaky)(fn)


_tasks(False, "")
_tasks(True, "_cpu")


def produce(suffix: str) -> dict[str, str]:
    """Send the scenario (run in a subprocess, the producer); returns the task ids by role."""
    from greenq.message import new_id

    revoked = new_id()
    app.control.revoke(revoked)
    ids = {
        "add": app.send_task(f"hooks.add{suffix}", [2, 3], {}).id,
        "boom": app.send_task(f"hooks.boom{suffix}", [7]).id,
        "flaky": app.send_task(f"hooks.flaky{suffix}", ["t"]).id,
        "revoked": app.send_task(f"hooks.add{suffix}", [1, 1], task_id=revoked).id,
        "expired": app.send_task(
            f"hooks.add{suffix}", [1, 2], expires=datetime.now(timezone.utc) - timedelta(minutes=1)
        ).id,
        "unknown": app.send_task("hooks.nope", [1]).id,
    }
    # A workflow's next step, as the worker builds it: with its parent's headers (never sent).
    parent, _ = app.build_message(f"hooks.add{suffix}", [0, 0])
    step = app.build_message(f"hooks.add{suffix}", [5, 5], headers=parent.headers)
    app._send([step], False)
    ids["next"] = step[0].id
    client().set("next_parent", parent.id)
    return ids


if __name__ == "__main__":
    print(json.dumps(produce(sys.argv[1] if len(sys.argv) > 1 else "")))
