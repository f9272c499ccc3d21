"""Put orders on the first stream of the pipeline example, and watch the last one.

    python produce.py -n 1000 [--poison] [--customers 50]          # Redis (REDIS_URL)
    python produce.py --kafka 127.0.0.1:9092 -n 1000 [--poison]     # Kafka
    python produce.py --tail                                        # follow notifications

Each order is ``{"id", "customer", "amount", "ts"}`` (``ts``: when it was produced, for
latency) keyed by its customer (the Redis entry's ``key`` field / the Kafka key).
``--poison`` slips in one order whose amount ``"12,50"`` the enrich stage cannot parse.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

POISON_AMOUNT = "12,50"


def orders(n: int, customers: int = 50, poison_at: int | None = None) -> Iterator[dict[str, Any]]:
    """``n`` orders (ids 0..n-1) spread over ``customers``; order ``poison_at`` is poison."""
    for i in range(n):
        amount = POISON_AMOUNT if i == poison_at else f"{i % 97 + 1}.{i % 100:02d}"
        yield {"id": i, "customer": f"c{i % customers}", "amount": amount, "ts": time.time()}


async def produce_redis(url: str, docs: Iterator[dict[str, Any]], stream: str = "orders") -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    count = 0
    try:
        batch: list[dict[str, Any]] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == 500:
                count += await _xadd(client, stream, batch)
                batch = []
        count += await _xadd(client, stream, batch)
    finally:
        await client.aclose()
    return count


async def _xadd(client: Any, stream: str, docs: list[dict[str, Any]]) -> int:
    async with client.pipeline(transaction=False) as pipe:
        for doc in docs:
            doc["ts"] = time.time()
            pipe.xadd(stream, {"data": json.dumps(doc), "key": doc["customer"]})
        await pipe.execute()
    return len(docs)


async def produce_kafka(
    bootstrap: str, docs: Iterator[dict[str, Any]], topic: str = "orders"
) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    count = 0
    try:
        futures = []
        for doc in docs:
            doc["ts"] = time.time()
            value = json.dumps(doc).encode()
            futures.append(await producer.send(topic, value, key=doc["customer"].encode()))
            count += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def tail_redis(url: str, stream: str = "notifications") -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True)
    last = "$"
    try:
        while True:
            for _name, entries in await client.xread({stream: last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    doc = json.loads(fields["data"])
                    lag_ms = (int(entry_id.partition("-")[0]) / 1000 - doc["ts"]) * 1000
                    print(f"{fields.get('key', ''):>5}  {doc['text']}  ({lag_ms:.0f} ms)")
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="orders to produce")
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--poison", action="store_true", help="include one bad order")
    parser.add_argument("--kafka", metavar="BOOTSTRAP", help="produce to Kafka instead")
    parser.add_argument("--tail", action="store_true", help="follow the notifications stream")
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if args.tail:
        asyncio.run(tail_redis(url))
        return
    docs = orders(args.n, args.customers, args.n // 2 if args.poison else None)
    started = time.perf_counter()
    if args.kafka:
        count = asyncio.run(produce_kafka(args.kafka, docs))
    else:
        count = asyncio.run(produce_redis(url, docs))
    took = time.perf_counter() - started
    print(f"produced {count} orders in {took:.2f} s" + (" (one poison)" if args.poison else ""))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
