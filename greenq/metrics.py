"""Prometheus metrics: a worker's own (``--metrics-port``) and queue-level (``greenq exporter``).

Collectors read counters the consumer keeps anyway, at scrape time, so metrics cost nothing per
task beyond what the worker already counts; flow control's state (``Flow``: paused queues, rates,
leases, messages held back) is read, never changed. Needs ``prometheus-client``
(``greenq[metrics]``). docs/operations.md lists every metric. Imports: admin (for the exporter),
http (its hosts' states), exceptions; the consumer is passed in (its module only as a type).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from greenq import http
from greenq.exceptions import ConfigError
from greenq.worker.stats import RUNTIME_BUCKETS_S

if TYPE_CHECKING:
    from greenq.broker.redis import RedisBroker
    from greenq.worker.admission import Flow
    from greenq.worker.consumer import Consumer

HTTP_HOST_STATES = ("open", "backoff", "probe", "failing")  # greenq.http's, besides the normal one


def _prometheus() -> Any:
    try:
        import prometheus_client
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    except ImportError:
        raise ConfigError("metrics need prometheus-client: pip install 'greenq[metrics]'") from None
    return prometheus_client, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class WorkerCollector:
    """greenq_worker_* metrics from one consumer's counters."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def collect(self) -> Iterator[Any]:
        _, counter, gauge, histogram = _prometheus()
        c = self.consumer
        labels = ["worker"]
        me = [c.consumer_id]
        tasks = counter(
            "greenq_worker_tasks",
            "Tasks finished, by task name and state",
            labels=["worker", "task", "state"],
        )
        for (name, state), count in list(c.task_counts.items()):
            tasks.add_metric([c.consumer_id, name, state], count)
        yield tasks
        runtime = histogram("greenq_worker_task_runtime_seconds", "Task runtime", labels=["worker", "task"])
        for name, (buckets, total, count) in list(c.runtimes.items()):
            cumulative, pairs = 0, []
            for bound, n in zip(RUNTIME_BUCKETS_S, buckets, strict=False):
                cumulative += n
                pairs.append((str(bound), cumulative))
            pairs.append(("+Inf", count))
            runtime.add_metric([c.consumer_id, name], pairs, total)
        yield runtime
        info = c.lanes.stats()
        for metric, value, text in (
            ("greenq_worker_in_flight", c.held(), "Messages held: reserved + running"),
            ("greenq_worker_running", c.lanes.running(), "Tasks running now"),
            ("greenq_worker_prefetch_fill", c.held() / c.capacity, "Held / prefetch capacity (0..1)"),
            ("greenq_worker_hub_blocks", info.get("hub_blocks", 0), "Tasks that blocked the gevent hub"),
        ):
            yield _gauge(gauge, metric, text, me, value)
        for metric, value, text in (
            ("greenq_worker_reconnects", c.stats.reconnects, "Broker outages recovered from"),
            ("greenq_worker_recovered", c.stats.recovered, "Messages recovered from dead workers"),
            ("greenq_worker_dead_lettered", c.stats.dead_lettered, "Messages dead-lettered"),
        ):
            family = counter(metric, text, labels=labels)
            family.add_metric(me, value)
            yield family
        yield from _flow(c.consumer_id, c.maintenance.flow, counter, gauge)


def _flow(me: str, flow: Flow, counter: Any, gauge: Any) -> Iterator[Any]:
    """Flow control as this worker applies it (docs/flow-control.md). Each value is read once:
    ``paused`` and ``rates`` are replaced whole by maintenance, the counts only grow."""
    paused, rates = flow.paused, flow.rates
    family = gauge(
        "greenq_worker_queue_paused",
        "1 while the queue is paused (greenq queue pause)",
        labels=["worker", "queue"],
    )
    for queue in flow.queues:
        family.add_metric([me, queue], 1.0 if queue in paused else 0.0)
    yield family
    family = gauge(
        "greenq_worker_queue_rate_limit_per_second",
        "Queue rate limit in force (queue_rate_limits or greenq queue limit); absent: none",
        labels=["worker", "queue"],
    )
    for queue, rate in sorted(rates.items()):
        family.add_metric([me, queue], rate.per_s)
    yield family
    yield _gauge(
        gauge,
        "greenq_worker_flow_leases",
        "Concurrency-limit leases its running tasks hold",
        [me],
        len(flow.leases),
    )
    family = counter(
        "greenq_worker_flow_held_back",
        "Times its gate held a message back: deferred (rate limit) or parked (concurrency limit)",
        labels=["worker", "reason"],
    )
    for reason, count in sorted(flow.held_back.items()):
        family.add_metric([me, reason], count)
    yield family
    states = list(http.host_states().values())
    family = gauge(
        "greenq_worker_http_hosts",
        "greenq.http hosts not in their normal state: circuit open, in back-off, probed, failing",
        labels=["worker", "state"],
    )
    for state in HTTP_HOST_STATES:
        family.add_metric([me, state], states.count(state))
    yield family


def _gauge(gauge: Any, name: str, text: str, labels: list[str], value: float) -> Any:
    family = gauge(name, text, labels=["worker"])
    family.add_metric(labels, value)
    return family


class QueueCollector:
    """greenq_queue_* metrics for every known queue, from Redis alone (for autoscalers)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        from greenq import admin

        _, _, gauge, _ = _prometheus()
        stats = [admin.queue_stats(self.broker, q) for q in admin.known_queues(self.broker)]
        for metric, attribute, text in (
            ("greenq_queue_ready", "ready", "Messages waiting to be delivered (consumer lag)"),
            ("greenq_queue_in_flight", "in_flight", "Delivered, not yet acked"),
            ("greenq_queue_delayed", "delayed", "ETA/countdown/retry messages waiting"),
            ("greenq_queue_dead", "dead", "Dead letters"),
            ("greenq_queue_oldest_age_seconds", "oldest_age_s", "Age of the oldest ready message"),
            ("greenq_queue_paused", "paused", "1 while the queue is paused (greenq queue pause)"),
        ):
            family = gauge(metric, text, labels=["queue"])
            for queue in stats:
                family.add_metric([queue.name], float(getattr(queue, attribute) or 0.0))
            yield family


def serve(collector: Any, port: int, address: str = "127.0.0.1") -> None:
    """Serve ``collector`` on http://address:port/metrics from a background thread."""
    prometheus_client, *_ = _prometheus()
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    prometheus_client.start_http_server(port, addr=address, registry=registry)
