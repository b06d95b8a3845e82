"""OpenTelemetry: a producer span per enqueue, a consumer span per run, one trace across both.

The producer writes the W3C ``traceparent`` of its span into the message envelope
(docs/protocol.md); the worker starts the task's span as its child, so a trace begun in a web
request shows the task it enqueued, each retry (a retry keeps the envelope's traceparent) and
the next steps of a workflow that copy it. Attributes follow OpenTelemetry's messaging semantic
conventions.

Off when ``opentelemetry-api`` is not installed (``greenq[otel]``); with it installed but no
tracer provider set, ``active()`` is one attribute read and nothing else runs (zero cost).
Imports: opentelemetry-api if present; nothing from greenq, so the producer side may import it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

try:  # NOTE: optional dependency (greenq[otel])
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # pragma: no cover - the test extra installs it
    trace = None  # type: ignore[assignment]
    otel_context = None  # type: ignore[assignment]

SYSTEM = "greenq"
_TRACER_NAME = "greenq"
_MISSING = object()


def active() -> bool:
    """True when spans would be recorded: the API is installed and a tracer provider is set.

    NOTE: reads the API's private global instead of ``get_tracer_provider()``, which looks up
    an environment variable on every call; an API without that global is treated as active.
    """
    if trace is None:
        return False
    return getattr(trace, "_TRACER_PROVIDER", _MISSING) is not None


# The API module when it keeps its provider in ``_TRACER_PROVIDER`` (None until one is set):
# the executor reads that global itself, on every task, instead of calling ``active()``.
API: Any = trace if trace is not None and hasattr(trace, "_TRACER_PROVIDER") else None

if trace is not None and "OTEL_PYTHON_TRACER_PROVIDER" in os.environ:
    trace.get_tracer_provider()  # a provider named by the environment is loaded (and set) now


def _tracer() -> Any:
    return trace.get_tracer(_TRACER_NAME)


def format_traceparent(span_context: Any) -> str | None:
    """The W3C ``traceparent`` header of a span context; None if it is not valid."""
    if not span_context.is_valid:
        return None
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def parse_traceparent(value: str | None) -> Any:
    """A remote ``SpanContext`` from a ``traceparent``; None if absent or malformed."""
    if not value or trace is None:
        return None
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    found = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
    return found if found.is_valid else None


def publish(
    task: str, queue: str, message_id: str, headers: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Record the producer span of one enqueue and return the message's headers carrying its
    ``traceparent``. The span is a child of ``headers``' traceparent when given (a workflow's next
    step, enqueued by the worker), else of the caller's current span, if any."""
    if not active():
        return dict(headers) if headers else None
    parent = parse_traceparent((headers or {}).get("traceparent"))
    with _tracer().start_as_current_span(
        f"send {task}",
        context=trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": queue,
            "messaging.message.id": message_id,
            "greenq.task.name": task,
        },
    ) as span:
        found = format_traceparent(span.get_span_context())
    merged = dict(headers or {})
    if found:
        merged["traceparent"] = found
    return merged or None


class ConsumerSpan:
    """The span of one task run, current while the body runs (its own spans are children)."""

    __slots__ = ("span", "token")

    def __init__(self, task: str, request: Mapping[str, Any]) -> None:
        parent = parse_traceparent((request.get("headers") or {}).get("traceparent"))
        parent_context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        self.span = _tracer().start_span(
            f"process {task}",
            context=parent_context,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": str(request.get("queue") or ""),
                "messaging.message.id": str(request.get("id")),
                "greenq.task.name": task,
                "greenq.task.retries": int(request.get("retries") or 0),
                "greenq.worker": str(request.get("worker") or ""),
            },
        )
        self.token = otel_context.attach(trace.set_span_in_context(self.span))

    def end(self, state: str, exc: BaseException | None) -> None:
        """Close the span with the task's state; a FAILURE records the exception."""
        try:
            self.span.set_attribute("greenq.task.state", state)
            if exc is not None and state == "FAILURE":
                self.span.record_exception(exc)
                self.span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self.span.end()
        finally:
            otel_context.detach(self.token)


def consume(task: str, request: Mapping[str, Any]) -> ConsumerSpan | None:
    """Start the consumer span of a run; None when tracing is off (or the SDK fails: logged)."""
    if not active():
        return None
    try:
        return ConsumerSpan(task, request)
    except Exception:
        logger.exception("tracing: could not start the span of %s[%s]", task, request.get("id"))
        return None
