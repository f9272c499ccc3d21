"""The ``kafka:CONNECTION/TOPIC`` sink: an AIOKafkaProducer with ``acks="all"``.

Each OutMessage becomes one record: value = payload, key = the message key (UTF-8) or
none, headers = the attributes (UTF-8 values). ``send`` hands every message to the
producer (which batches them per partition), then awaits every delivery, so it returns
only once all are acknowledged by the in-sync replicas. Records of one key keep their
order (same partition, one producer, in-flight requests retried in order by aiokafka).

Idempotence is left to the connection settings: Tansu (the test broker) answers
InitProducerId with an error, and a resend after a partial failure is at-least-once
anyway, like the rest of eventrun.

Errors: connection trouble, timeouts and broker errors raise :class:`SinkUnavailable` (the
caller keeps the messages and retries); a record the broker refuses (too large, invalid
topic) raises :class:`SinkRejected`. The producer connects lazily: a sink whose cluster is
down at startup does not stop the daemon, its first ``send`` raises SinkUnavailable.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from eventrun.abc import OutMessage, SinkSpec
from eventrun.brokers import kafka as client_util
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable

__all__ = ["KafkaSink", "create"]

log = structlog.get_logger("eventrun.sinks.kafka")


def create(spec: SinkSpec) -> KafkaSink:
    """Entry point ``eventrun.sinks: kafka``."""
    return KafkaSink(spec)


class KafkaSink:
    """Sends OutMessages to one Kafka topic."""

    send_timeout_s = 30.0
    """Bound on one ``send`` (connect + deliver everything); past it: SinkUnavailable."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        _, sep, topic = spec.target.partition("/")
        if not sep or not topic:
            raise ConfigError(f"{spec.url}: expected kafka:CONNECTION/TOPIC")
        self.topic = topic
        try:
            self._kwargs = client_util.client_kwargs(spec.connection, spec.config_dir)
        except ValueError as exc:
            raise ConfigError(f"{spec.url}: {exc}") from None
        self._producer: AIOKafkaProducer | None = None
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Self:
        try:
            await self._started()
        except SinkUnavailable as exc:
            log.warning("sink.connect_failed", sink=self.spec.url, error=str(exc))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with anyio.move_on_after(10, shield=True):
                await producer.stop()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            kwargs = client_util.producer_kwargs(self._kwargs)
            kwargs.setdefault("acks", "all")
            producer = AIOKafkaProducer(**kwargs)
            try:
                with anyio.fail_after(self.send_timeout_s):
                    await producer.start()
            except (kafka_errors.KafkaError, TimeoutError, OSError) as exc:
                with anyio.move_on_after(5, shield=True):
                    await producer.stop()
                raise self._error(exc) from exc
            self._producer = producer
            return producer

    def _error(self, exc: BaseException) -> SinkUnavailable | SinkRejected:
        message = f"{self.spec.url}: Kafka produce failed: {exc!r}"
        if client_util.classify(exc) == "rejected":
            return SinkRejected(message)
        return SinkUnavailable(message)

    async def send(self, messages: Sequence[OutMessage]) -> None:
        if not messages:
            return
        producer = await self._started()
        futures: list[Any] = []
        try:
            with anyio.fail_after(self.send_timeout_s):
                for message in messages:
                    key = None if message.key is None else message.key.encode()
                    headers = [(k, str(v).encode()) for k, v in message.attributes.items()]
                    future = await producer.send(
                        self.topic, message.payload, key=key, headers=headers or None
                    )
                    future.add_done_callback(_retrieve)
                    futures.append(future)
                for future in futures:
                    await future
        except (kafka_errors.KafkaError, TimeoutError, OSError) as exc:
            raise self._error(exc) from exc


def _retrieve(future: Any) -> None:
    """Mark a delivery's failure as seen when ``send`` gave up before awaiting it."""
    if not future.cancelled():
        future.exception()
