"""The ``nats:CONNECTION/SUBJECT`` sink: publish each message to JetStream with an ack.

``SUBJECT`` must be captured by a stream (JetStream answers each publish with a PubAck
naming the stream and sequence); a subject no stream captures is refused (SinkRejected)
rather than sent into the void as a core NATS publish would be. The messages of one
``send`` are published in order without waiting (``publish_async``), then every PubAck is
awaited: one round trip per send. A message's key goes out as the header ``Eventrun-Key``
and its attributes as further headers. A connection problem or a missing ack raises
SinkUnavailable (the caller retries: at-least-once, a message may then be stored twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable, SourceUnavailable
from eventrun_nats._client import connect, redact, server_url

__all__ = ["KEY_HEADER", "NatsSink", "create"]

KEY_HEADER = "Eventrun-Key"
ACK_TIMEOUT_S = 10.0


def create(spec: SinkSpec) -> NatsSink:
    """Entry point ``eventrun.sinks: nats``."""
    return NatsSink(spec)


class NatsSink:
    """A :class:`eventrun.abc.Sink` publishing to one JetStream subject."""

    def __init__(self, spec: SinkSpec) -> None:
        _name, _, subject = spec.target.partition("/")
        if not subject or " " in subject or subject.endswith("."):
            raise ConfigError(
                f"{spec.url}: a nats destination is nats:CONNECTION/SUBJECT"
                f" (connections.nats.CONNECTION), got subject {subject!r}"
            )
        self.subject = subject
        self.url = spec.url
        self._server = server_url(None, spec.connection)
        self._where = redact(self._server)
        self._nc: Client | None = None
        self._js: Any = None

    async def __aenter__(self) -> Self:
        try:
            self._nc = await connect(self._server, name=f"eventrun sink {self.subject}")
        except SourceUnavailable as exc:
            raise SinkUnavailable(f"{self.url}: {exc}") from exc
        self._js = self._nc.jetstream()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await nc.close()

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Publish every message and wait for all PubAcks (or raise)."""
        if self._js is None:
            raise SinkUnavailable(f"{self.url}: send() outside 'async with'")
        futures = []
        try:
            for message in messages:
                headers = dict(message.attributes)
                if message.key is not None:
                    headers[KEY_HEADER] = message.key
                futures.append(
                    await self._js.publish_async(
                        self.subject, message.payload, headers=headers or None
                    )
                )
            with anyio.fail_after(ACK_TIMEOUT_S):
                for future in futures:
                    await future
        except TimeoutError as exc:
            raise SinkUnavailable(
                f"{self.url}: no publish ack from NATS at {self._where} within {ACK_TIMEOUT_S:.0f}s"
            ) from exc
        except nats.js.errors.NoStreamResponseError as exc:
            raise SinkRejected(
                f"{self.url}: no JetStream stream captures {self.subject!r}"
            ) from exc
        except nats.js.errors.APIError as exc:
            raise SinkRejected(f"{self.url}: JetStream refused the publish: {exc}") from exc
        except (nats.errors.Error, OSError) as exc:
            raise SinkUnavailable(f"{self.url}: NATS at {self._where}: {exc!r}") from exc
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
