"""The ``mqtt:CONNECTION/TOPIC`` destination: QoS 1 PUBLISH, done when the broker PUBACKed.

``mqtt:main/orders/failed`` publishes to topic ``orders/failed`` on ``connections.mqtt.main``
(the topic is everything after the first ``/``; no wildcards). Each message is a JSON
document (``Content Type: application/json``, payload format UTF-8); its key and attributes
travel as MQTT 5 user properties (``key``, then one per attribute).

``send`` publishes every message with QoS 1 and returns once each one's PUBACK arrived:
the broker then has it (on disk with Mosquitto's persistence, at its next save). A lost or
unreachable broker raises SinkUnavailable (the caller retries the whole call, so a message
may be published twice: at least once); a PUBACK with a failure reason code (not
authorized, quota exceeded...) raises SinkRejected. The connection is opened on the first
``send`` and re-opened after a failure; it is a clean session, since nothing outlives a
``send``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import anyio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import SinkError, SinkRejected, SinkUnavailable
from eventrun_mqtt._link import Broker, Link, LinkError, LinkRefused

__all__ = ["MqttSink", "create"]

SEND_TIMEOUT_S = 30.0


def create(spec: SinkSpec) -> MqttSink:
    """Entry point ``eventrun.sinks: mqtt``."""
    return MqttSink(spec)


class MqttSink:
    """A :class:`eventrun.abc.Sink` publishing to one MQTT topic."""

    def __init__(self, spec: SinkSpec) -> None:
        name, _, topic = spec.target.partition("/")
        url = getattr(spec.connection, "url", None)
        if not url:
            raise SinkError(
                f"{spec.url}: needs a connection: mqtt:NAME/TOPIC with connections.mqtt.NAME.url"
            )
        if not topic or "+" in topic or "#" in topic:
            raise SinkError(f"{spec.url}: needs a topic without wildcards: mqtt:{name}/TOPIC")
        self.spec = spec
        self.topic = topic
        self.broker = Broker.from_url(str(url))
        self.client_id = f"eventrun-sink-{uuid.uuid4().hex[:12]}"
        self._link: Link | None = None
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        link, self._link = self._link, None
        if link is not None:
            with anyio.CancelScope(shield=True):
                await link.close()

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Publish every message (QoS 1) and wait for all their PUBACKs."""
        if not messages:
            return
        async with self._lock:
            try:
                link = await self._connected()
                mids = [link.publish(self.topic, m.payload, _properties(m)) for m in messages]
                with anyio.fail_after(SEND_TIMEOUT_S):
                    for mid in mids:
                        code = await link.wait_puback(mid, SEND_TIMEOUT_S)
                        if code is not None and code.is_failure:
                            raise SinkRejected(
                                f"{self.spec.url}: {self.broker.location} refused a message "
                                f"to {self.topic!r}: {code}"
                            )
            except LinkRefused as exc:
                await self._drop()
                raise SinkRejected(f"{self.spec.url}: {exc}") from exc
            except (LinkError, TimeoutError) as exc:
                await self._drop()
                raise SinkUnavailable(f"{self.spec.url}: {exc}") from exc

    async def _connected(self) -> Link:
        link = self._link
        if link is not None and not link.lost.is_set():
            return link
        await self._drop()
        link = Link(self.broker, self.client_id, clean_start=True, session_expiry_s=0)
        await link.open()
        self._link = link
        return link

    async def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with anyio.CancelScope(shield=True):
                await link.close(1.0)


def _properties(message: OutMessage) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    pairs = [("key", message.key)] if message.key is not None else []
    pairs += [(str(k), str(v)) for k, v in message.attributes.items()]
    if pairs:
        props.UserProperty = pairs
    return props
