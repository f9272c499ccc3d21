"""Produces to and reads the ledger of the Compose stack, from a container on its network.

Run by tests/deploy/test_containers.py with the eventrun image's Python (its venv has
aiokafka, aiobotocore and redis), as ``python stack_client.py COMMAND ...``; prints JSON:

* ``produce PREFIX N [SQS_N]``: N records to Kafka topic ``orders`` (spread over its
  partitions) and Redis stream ``events``, SQS_N (default N) to SQS queue ``jobs``, ids
  ``PREFIX-<i>`` (moto takes about 0.25 s per SendMessageBatch of 10 here: keep SQS_N small);
* ``ledger``: ``{source: ["<id> <replica> <time>", ...]}``, the handlers' ledger (Redis db 2);
* ``delay SECONDS``: how long each handler sleeps per batch (keeps batches in flight);
* ``pending HOST``: ids of the ``events`` stream entries pending (delivered, not
  acknowledged) on the consumers of replica HOST (consumer names are ``<hostname>-<pid>``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis.asyncio as aioredis
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer

KAFKA = "kafka:9092"
STORE = "redis://redis:6379/0"
LEDGER = "redis://redis:6379/2"
SQS = {
    "endpoint_url": "http://sqs:9324",
    "region_name": "us-east-1",
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
}
SOURCES = ("kafka", "stream", "sqs", "cron")


async def produce(prefix: str, count: int, sqs_count: int) -> dict[str, object]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    took: dict[str, float] = {}
    start = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=5)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for("orders"))
        sends = [
            await producer.send("orders", i.encode(), partition=partitions[n % len(partitions)])
            for n, i in enumerate(ids)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    took["kafka"] = round(time.monotonic() - start, 1)
    start = time.monotonic()
    store = aioredis.from_url(STORE)
    async with store.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.xadd("events", {"id": i})
        await pipe.execute()
    await store.aclose()
    took["stream"] = round(time.monotonic() - start, 1)
    start = time.monotonic()
    async with get_session().create_client("sqs", **SQS) as sqs:
        url = (await sqs.get_queue_url(QueueName="jobs"))["QueueUrl"]
        lanes = asyncio.Semaphore(8)

        async def send(chunk: list[str]) -> None:
            entries = [
                {"Id": str(n), "MessageBody": json.dumps({"id": i})} for n, i in enumerate(chunk)
            ]
            async with lanes:
                result = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            assert not result.get("Failed"), result

        await asyncio.gather(*(send(ids[s : s + 10]) for s in range(0, sqs_count, 10)))
    took["sqs"] = round(time.monotonic() - start, 1)
    return {"produced": count, "partitions": len(partitions), "seconds": took}


async def ledger() -> dict[str, list[str]]:
    client = aioredis.from_url(LEDGER, decode_responses=True)
    out = {source: await client.lrange(f"ledger:{source}", 0, -1) for source in SOURCES}
    await client.aclose()
    return out


async def delay(seconds: float) -> dict[str, float]:
    client = aioredis.from_url(LEDGER)
    await client.set("ledger:delay", seconds)
    await client.aclose()
    return {"delay": seconds}


async def pending(host: str) -> dict[str, list[str]]:
    client = aioredis.from_url(STORE, decode_responses=True)
    ids: list[str] = []
    for consumer in await client.xinfo_consumers("events", "events-fn"):
        if not consumer["name"].startswith(host + "-") or not consumer["pending"]:
            continue
        entries = await client.xpending_range(
            "events", "events-fn", "-", "+", consumer["pending"], consumername=consumer["name"]
        )
        for entry in entries:
            found = await client.xrange("events", entry["message_id"], entry["message_id"])
            ids.extend(fields["id"] for _, fields in found)
    await client.aclose()
    return {"pending": ids}


async def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "produce":
        count = int(args[1])
        result: object = await produce(args[0], count, int(args[2]) if args[2:] else count)
    elif command == "ledger":
        result = await ledger()
    elif command == "pending":
        result = await pending(args[0])
    elif command == "delay":
        result = await delay(float(args[0]))
    else:
        raise SystemExit(f"unknown command {command!r}: produce, ledger, pending or delay")
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
