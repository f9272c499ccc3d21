"""Helpers for the RabbitMQ plugin tests: declare, publish, count, and a handler that
plays the function on ``aws:rmq`` batch events (driving the real dispatcher)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiormq
import anyio
from pamqp import commands as spec

from eventrun.abc import OutMessage, SourceSpec
from eventrun_rabbitmq.config import RabbitMQTrigger
from eventrun_rabbitmq.source import RabbitMQPoller


@asynccontextmanager
async def channel(url: str, *, confirms: bool = True) -> AsyncIterator[Any]:
    conn = await aiormq.connect(url)
    try:
        yield await conn.channel(publisher_confirms=confirms)
    finally:
        await conn.close()


async def declare(url: str, queue: str, *, quorum: bool = False) -> None:
    args = {"x-queue-type": "quorum"} if quorum else None
    async with channel(url) as ch:
        await ch.queue_declare(queue, durable=True, arguments=args)


async def publish(
    url: str,
    queue: str,
    bodies: Sequence[bytes],
    *,
    ids: Sequence[str] | None = None,
    properties: spec.Basic.Properties | None = None,
) -> None:
    """Publish persistent messages to ``queue`` with confirms, in order."""
    async with channel(url) as ch:

        async def one(i: int) -> None:
            props = properties or spec.Basic.Properties(
                delivery_mode=2, message_id=ids[i] if ids else None
            )
            confirm = await ch.basic_publish(bodies[i], routing_key=queue, properties=props)
            assert isinstance(confirm, spec.Basic.Ack), confirm

        # tasks take the channel's lock in start order: the queue gets them in order
        for start in range(0, len(bodies), 500):
            async with anyio.create_task_group() as tg:
                for i in range(start, min(start + 500, len(bodies))):
                    tg.start_soon(one, i)


async def ready_count(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (not counting ones delivered and unacknowledged)."""
    async with channel(url) as ch:
        declared = await ch.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)


def poller(url: str, queue: str, **config: Any) -> RabbitMQPoller:
    cfg = RabbitMQTrigger(url=url, queue=queue, **config)
    spec_ = SourceSpec(kind="rabbitmq", name="fn/rabbitmq[0]", function="fn", config=cfg)
    return RabbitMQPoller(spec_)


def settings_of(p: RabbitMQPoller, **extra: Any) -> dict[str, Any]:
    """DispatchSettings keywords the runtime derives from the trigger."""
    cfg = p.spec.config
    out = {
        "batch_size": cfg.batch_size,
        "window_s": cfg.maximum_batching_window,
        "max_receive_count": cfg.max_receive_count,
        "report_batch_item_failures": cfg.report_batch_item_failures,
        "queue_lanes": cfg.maximum_concurrency,
    }
    out.update(extra)
    return out


@dataclass(slots=True)
class Result:
    request_id: str
    ok: bool
    payload: bytes
    error_type: str | None = None


@dataclass
class RmqHandler:
    """Plays the function: ``fn(messages)`` gets each batch's decoded messages (dicts
    with ``id`` = the body text, ``redelivered``, ``props``); raising fails the batch."""

    fn: Callable[[list[dict[str, Any]]], Any] = lambda messages: None
    calls: list[list[dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0

    async def __call__(self, payload: bytes, *, event: Any = None) -> Result:
        doc = json.loads(payload)
        self.events.append(doc)
        (messages,) = doc["rmqMessagesByQueue"].values()
        decoded = [
            {
                "id": base64.b64decode(m["data"]).decode(),
                "redelivered": m["redelivered"],
                "props": m["basicProperties"],
            }
            for m in messages
        ]
        self.calls.append(decoded)
        rid = f"req-{len(self.calls)}"
        try:
            if self.delay_s:
                await anyio.sleep(self.delay_s)
            value = self.fn(decoded)
        except Exception as exc:
            err = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return Result(rid, False, json.dumps(err).encode(), type(exc).__name__)
        return Result(rid, True, json.dumps(value).encode())

    def handled(self) -> list[str]:
        return [m["id"] for call in self.calls for m in call]


@dataclass
class Collector:
    """An on_failure publisher that keeps what it is given."""

    messages: list[OutMessage] = field(default_factory=list)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        self.messages.extend(messages)

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages]


async def poll_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Check ``predicate`` every 50 ms (broker or handler state: no event to wait on)."""
    try:
        with anyio.fail_after(timeout_s):
            while not predicate():  # noqa: ASYNC110 - external state, no event
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def wait_async(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Like :func:`poll_until` for a check that talks to the broker."""
    try:
        with anyio.fail_after(timeout_s):
            while not await check():  # noqa: ASYNC110 - broker state, no event
                await anyio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None
