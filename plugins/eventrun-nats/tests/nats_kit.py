"""Helpers of the NATS plugin tests: a trigger spec, a ledger handler the dispatcher
invokes, a collecting on_failure publisher, publishing and consumer inspection."""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from nats.aio.client import Client
from nats.js import api

from eventrun.abc import OutMessage, SourceSpec
from eventrun_nats.config import NatsTrigger


def spec(url: str, stream: str, **config: Any) -> SourceSpec:
    cfg = NatsTrigger.model_validate(
        {"url": url, "stream": stream, "consumer": "fn", "ack_wait": 10, **config}
    )
    return SourceSpec(kind="nats", name="fn/nats[0]", function="fn", config=cfg)


async def make_stream(nc: Client, stream: str, subjects: Sequence[str] | None = None) -> None:
    await nc.jetstream().add_stream(name=stream, subjects=list(subjects or [f"{stream}.>"]))


async def publish(nc: Client, stream: str, count: int, subjects: int = 4, start: int = 0) -> None:
    """``count`` messages ``{"id", "subject", "seq"}`` round-robin over ``subjects``
    subjects ``STREAM.s0``...; ``seq`` counts per subject."""
    js = nc.jetstream()
    futures = []
    for i in range(start, start + count):
        subject = f"{stream}.s{i % subjects}"
        body = {"id": i, "subject": subject, "seq": i // subjects}
        futures.append(await js.publish_async(subject, json.dumps(body).encode()))
        if len(futures) >= 500:
            for f in futures:
                await f
            futures = []
    for f in futures:
        await f


async def consumer_state(nc: Client, stream: str, consumer: str = "fn") -> api.ConsumerInfo:
    return await nc.jetstream().consumer_info(stream, consumer)


async def wait_settled(nc: Client, stream: str, timeout_s: float = 30.0) -> None:
    """Until the consumer has nothing pending and nothing unacknowledged."""
    with anyio.fail_after(timeout_s):
        while True:
            info = await consumer_state(nc, stream)
            if not info.num_pending and not info.num_ack_pending:
                return
            await anyio.sleep(0.05)


@dataclass(slots=True)
class Result:
    request_id: str
    ok: bool
    payload: bytes
    error_type: str | None = None


def body(record: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(record["data"]))
    return decoded


@dataclass
class Ledger:
    """Plays the function: handles records in order; ``poison(body)`` True makes that
    record fail (reported with batchItemFailures for it and every later record of the
    batch, which are not handled: Lambda's ordered partial-failure pattern; with
    ``stop_at_poison=False`` only the poison is reported and the rest handled)."""

    poison: Callable[[dict[str, Any]], bool] = lambda body: False
    partial: bool = True
    stop_at_poison: bool = True
    delay_s: float = 0.0
    block: anyio.Event | None = None
    handled: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, payload: bytes, *, event: Any = None) -> Result:
        doc = json.loads(payload)
        self.calls += 1
        self.events.append(doc)
        self._wake()
        rid = f"req-{self.calls}"
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        if self.block is not None:
            await self.block.wait()
        failures = []
        for i, record in enumerate(doc["records"]):
            if self.poison(body(record)):
                if not self.partial:
                    err = {"errorMessage": "poison", "errorType": "ValueError"}
                    self._wake()
                    return Result(rid, False, json.dumps(err).encode(), "ValueError")
                if not self.stop_at_poison:  # queue contract: only the poison fails
                    failures.append({"itemIdentifier": record["streamSequence"]})
                    continue
                failures = [{"itemIdentifier": r["streamSequence"]} for r in doc["records"][i:]]
                break
            self.handled.append(record)
        self._wake()
        return Result(rid, True, json.dumps({"batchItemFailures": failures}).encode())

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
        with anyio.fail_after(timeout_s):
            while not predicate():
                await self._changed.wait()

    def ids(self) -> Counter[int]:
        return Counter(body(r)["id"] for r in self.handled)

    def per_subject(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for record in self.handled:
            out[record["subject"]].append(body(record)["seq"])
        return out


@dataclass
class Collector:
    """An on_failure publisher that keeps what it is given."""

    messages: list[OutMessage] = field(default_factory=list)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        self.messages.extend(messages)

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages]
