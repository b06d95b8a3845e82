"""The asyncio producer (greenq.aio) on Redis Cluster (``redis+cluster://``), three masters
started by the test and a real worker: gathered ``aapply_async`` and ``amap`` batches to six
queues and a sharded one (each pipeline split per node), ETA, ``aget`` and ``aiter_updates``
from asyncio, and a stale slot map corrected by the servers' ``MOVED`` (docs/scaling.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from greenq.broker.cluster import slot_map
from greenq.broker.keys import Keys
from greenq.results import SUCCESS
from tests.scale import scale_app
from tests.scale.servers import Cluster

QUEUES = [f"a{i}" for i in range(6)]
SHARDS = 4


async def _results(sent: list[Any], at_once: int = 100) -> list[Any]:
    """``aget`` of each, ``at_once`` waiting together: each wait holds a connection of its
    node's pool, and opening thousands at once on this shared machine is not what is tested."""
    gate = asyncio.Semaphore(at_once)

    async def one(result: Any) -> Any:
        async with gate:
            return await result.aget(timeout=60)

    return list(await asyncio.gather(*(one(x) for x in sent)))


def test_asyncio_producer_on_a_cluster_six_queues_a_sharded_one_eta_and_results(
    cluster: Cluster, producer: Any, start_worker: Any, redis_url: str, r: redis.Redis
) -> None:
    app = producer(cluster.url)
    app.override({"queue_shards": {"hot": SHARDS}}, "test")
    env = {"COUNTER_URL": redis_url, "GREENQ_QUEUE_SHARDS": f'{{"hot": {SHARDS}}}'}
    args = ("-P", "gevent", "-c", "50", "-Q", ",".join([*QUEUES, "hot"]))
    start_worker(*args, app="tests.scale.scale_app", url=cluster.url, env=env)
    nodes = cluster.client()
    masters = {nodes.get_node_from_key(Keys.stream(q)).port for q in QUEUES}
    assert len(masters) == 3  # the six queues live on all three masters

    async def main() -> dict[str, Any]:
        # One pipeline per flush spans every queue, so every node: write combining on a cluster
        single = await asyncio.gather(
            *(scale_app.early.aapply_async(("aio",), queue=QUEUES[i % 6]) for i in range(300))
        )
        batches = [await scale_app.early.amap([("aio",)] * 400, queue=q) for q in QUEUES]
        hot = await scale_app.where.amap([("aio-hot",)] * 200, queue="hot")
        due = time.time() + 1.0
        eta = await asyncio.gather(
            *(scale_app.stamp.aapply_async(("aio-eta",), queue=q, eta=due) for q in QUEUES)
        )
        early = [*single, *(x for batch in batches for x in batch)]
        values = await _results(early)
        shards = await _results(hot)
        ran = await _results(eta)
        updates = [u async for u in eta[0].aiter_updates(timeout=30)]
        await app.aclose()
        return {
            "early": early,
            "values": values,
            "shards": shards,
            "due": due,
            "ran": ran,
            "updates": updates,
        }

    found = asyncio.run(main())
    assert found["values"] == [x.id for x in found["early"]]
    runs = {k.decode(): int(v) for k, v in r.hgetall("runs:aio").items()}
    assert len(found["early"]) == 2700 and runs == {x.id: 1 for x in found["early"]}  # each ran once
    assert set(found["shards"]) == {f"hot#{i}" for i in range(SHARDS)}  # spread over the shards
    assert all(ran >= found["due"] - 0.002 for ran in found["ran"])  # not before its time (ms)
    assert found["updates"][-1]["state"] == SUCCESS and found["updates"][-1]["result"] == found["ran"][0]


def test_a_stale_slot_map_is_corrected_by_moved(
    cluster: Cluster, producer: Any, start_worker: Any, redis_url: str, r: redis.Redis
) -> None:
    """Every slot believed to be on one master: the two others answer MOVED, the asyncio router
    asks for the map again and sends those commands once more; nothing is lost or doubled."""
    producer(cluster.url)
    start_worker("-c", "20", "-Q", ",".join(QUEUES), app="tests.scale.scale_app", url=cluster.url)
    first = (("127.0.0.1", cluster.master_ports[0]),)

    async def main() -> list[Any]:
        await scale_app.early.adelay("warm")  # the map is known
        shared = slot_map(cluster.url)
        shared.owner = list(first * len(shared.owner))  # wrong for two thirds of the slots
        sent = [x for q in QUEUES for x in await scale_app.early.amap([("moved",)] * 50, queue=q)]
        assert shared.owner[0] != shared.owner[-1]  # asked again: the real owners
        shared.owner = list(first * len(shared.owner))
        values = await _results(sent)  # waits follow MOVED too
        assert values == [x.id for x in sent]
        await scale_app.app.aclose()
        return sent

    sent = asyncio.run(main())
    runs = {k.decode(): int(v) for k, v in r.hgetall("runs:moved").items()}
    assert runs == {x.id: 1 for x in sent}
