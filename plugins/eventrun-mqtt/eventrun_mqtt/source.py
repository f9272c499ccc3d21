"""The ``mqtt`` trigger: an ordered poller over a QoS 1 subscription in a persistent session.

Delivery contract (what this poller guarantees the dispatcher, and the broker):

* **Persistent session.** The client id is fixed (``client_id``, else
  ``eventrun-FUNCTION-INDEX``, plus ``-HOSTNAME`` with a ``group``), the connection uses
  MQTT 5 ``clean_start=false`` with a Session Expiry Interval (``session_expiry``), so
  subscriptions, messages not yet PUBACKed and messages queued while the consumer is away
  stay with the broker across restarts and crashes (Mosquitto keeps them on disk with
  ``persistence true``).
* **PUBACK only after success, in order.** paho's ``manual_ack``: nothing is acknowledged
  on receipt. ``ack(records)`` marks records done; PUBACKs go out for the longest *done
  prefix in receive order* of the connection, because MQTT requires a client to send
  PUBACKs in the order the PUBLISH packets arrived ([MQTT-4.6.0-2]). A record that is
  still running or retrying therefore also holds back the PUBACKs of records received
  after it (they are processed; their PUBACK waits). ``receive_maximum`` bounds how many
  unacknowledged messages the broker sends, so it also bounds that wait's memory.
  ``puback_order: topic`` instead PUBACKs each topic's completed prefix at once (what the
  dispatcher hands over): a retrying topic then holds back only its own PUBACKs. That
  breaks the letter of [MQTT-4.6.0-2]; Mosquitto and most brokers accept it.
* **Shard = topic.** Records come out per topic in receive order, which is the broker's
  publish order per topic for QoS 1 from one publisher. The dispatcher runs a topic's
  batches one after another, retries a failing batch in place, sends it to ``on_failure``
  after ``maximum_retry_attempts``, and only then acknowledges it.
* **Release.** MQTT has no negative acknowledgement and lets a broker resend an
  unacknowledged PUBLISH only when the session reconnects. ``release`` therefore marks the
  records released: they are never PUBACKed on this connection, and the broker sends them
  again (DUP=1) on the session's next connection (the next start, or a reconnect). The
  dispatcher releases an ordered source's records only at shutdown.
* **Reconnects.** A lost connection is re-established in the background with backoff
  (``poll`` raises SourceUnavailable meanwhile). Records of the lost connection that were
  not yet polled are dropped, and acks of records that were are not sent: the broker
  resends all of them on the new connection, so they are processed again (at least once).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import paho.mqtt.client as mqtt
import structlog
from anyio.abc import TaskGroup, TaskStatus

from eventrun.abc import Record, SourceSpec
from eventrun.exceptions import SourceAuthError, SourceError, SourceUnavailable
from eventrun_mqtt._link import Broker, Link, LinkError, LinkRefused
from eventrun_mqtt.events import batch_info, build_record

__all__ = ["MqttPoller", "create", "default_client_id"]

log = structlog.get_logger("eventrun.sources.mqtt")

POLL_WAIT_S = 1.0
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 10.0


def create(spec: SourceSpec) -> MqttPoller:
    """Entry point ``eventrun.sources: mqtt``."""
    return MqttPoller(spec)


def default_client_id(spec: SourceSpec, group: str | None) -> str:
    """``eventrun-FUNCTION-INDEX`` (from the trigger id ``FUNCTION/mqtt[INDEX]``), plus
    ``-HOSTNAME`` with a shared-subscription group: one session per replica."""
    function, _, rest = spec.name.partition("/")
    index = rest[rest.find("[") + 1 : rest.find("]")] if "[" in rest else "0"
    name = f"eventrun-{function}-{index}"
    if group is not None:
        name += f"-{_hostname()}"
    return name


class _Delivery:
    """A QoS 1 message of one connection, until its PUBACK is sent."""

    __slots__ = ("done", "link", "mid", "qos", "released")

    def __init__(self, link: Link, mid: int, qos: int) -> None:
        self.link = link
        self.mid = mid
        self.qos = qos
        self.done = False
        self.released = False


class MqttPoller:
    """A :class:`eventrun.abc.Poller` for MQTT subscriptions (ordered per topic)."""

    ordered = True

    def __init__(self, spec: SourceSpec) -> None:
        cfg = spec.config
        url = cfg.url or getattr(spec.connection, "url", None)
        if not url:
            raise SourceError(f"{spec.name}: mqtt trigger needs url or a connection with a url")
        self.spec = spec
        self.broker = Broker.from_url(str(url))
        group = getattr(cfg, "group", None)
        topics = list(cfg.topics)
        self.filters = [f"$share/{group}/{t}" for t in topics] if group else topics
        self.client_id: str = getattr(cfg, "client_id", None) or default_client_id(spec, group)
        self.receive_maximum = int(getattr(cfg, "receive_maximum", 1000))
        self.session_expiry_s = int(getattr(cfg, "session_expiry", 7 * 86400))
        self.keepalive_s = int(getattr(cfg, "keepalive", 30))
        self.puback_order: str = getattr(cfg, "puback_order", "receive")
        self._link: Link | None = None
        self._receiving: Link | None = None
        self._order: deque[_Delivery] = deque()
        self._buffer: deque[Record] = deque()
        self._arrived: anyio.Event  # events are made in __aenter__ (they need a loop)
        self._connected: anyio.Event
        self._last_error: str = ""
        self._receipts = uuid.uuid4().hex[:8]
        self._seq = 0
        self._tg: TaskGroup | None = None
        self.reconnects = 0

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # the runtime enters a poller again after a failed start: begin afresh
        self._order.clear()
        self._buffer.clear()
        self._link = self._receiving = None
        self._arrived, self._connected = anyio.Event(), anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self._keep_connected)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            if isinstance(exc, LinkRefused):
                kind = SourceAuthError if exc.auth else SourceError
                raise kind(f"{self.spec.name}: {exc}") from exc
            if isinstance(exc, LinkError):
                raise SourceUnavailable(f"{self.spec.name}: {exc}") from exc
            raise
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    async def _connect(self) -> Link:
        link = Link(
            self.broker,
            self.client_id,
            clean_start=False,
            session_expiry_s=self.session_expiry_s,
            receive_maximum=self.receive_maximum,
            keepalive_s=self.keepalive_s,
            on_message=self._on_message,
        )
        # A resumed session's unacknowledged messages arrive right after CONNACK.
        self._receiving = link
        try:
            await link.open()
            await link.subscribe(self.filters)
        except BaseException:
            self._receiving = None
            with anyio.CancelScope(shield=True):
                await link.close(1.0)
            raise
        log.info(
            "mqtt.connected",
            trigger=self.spec.name,
            broker=self.broker.location,
            client_id=self.client_id,
            session_present=link.session_present,
            topics=self.filters,
        )
        return link

    async def _keep_connected(self, *, task_status: TaskStatus[None]) -> None:
        """Own the connection: connect, and reconnect with backoff whenever it drops.
        The first connect's failure is raised to ``__aenter__``."""
        link = await self._connect()
        self._install(link)
        task_status.started()
        try:
            while True:
                await link.lost.wait()
                log.warning(
                    "mqtt.connection_lost",
                    trigger=self.spec.name,
                    broker=self.broker.location,
                    reason=link.lost_reason,
                    unacknowledged=len(self._order),
                )
                self._uninstall(link.lost_reason)
                link = await self._reconnect()
                self._install(link)
        finally:
            if self._link is not None:
                self._link = None
                with anyio.CancelScope(shield=True):
                    await self._settle(link)
                    await link.close()

    async def _settle(self, link: Link) -> None:
        """Make sure the broker processed our last PUBACKs before we disconnect.

        paho closes the socket as soon as DISCONNECT is written; a restart that
        reconnects at once may then take the session over before the broker read those
        PUBACKs, and get their messages again. The broker handles one connection's
        packets in order, so a SUBACK for the same subscriptions (a no-op for the broker)
        proves the PUBACKs before it were processed."""
        if link.lost.is_set():
            return
        try:
            await link.subscribe(self.filters, timeout_s=2.0)
        except LinkError as exc:
            log.debug("mqtt.settle_failed", trigger=self.spec.name, error=str(exc))

    async def _reconnect(self) -> Link:
        attempt = 0
        while True:
            attempt += 1
            try:
                link = await self._connect()
            except LinkError as exc:
                self._last_error = str(exc)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("mqtt.reconnect_failed", trigger=self.spec.name, error=str(exc))
                await anyio.sleep(min(RECONNECT_BASE_S * 2 ** min(attempt, 10), RECONNECT_CAP_S))
                continue
            self.reconnects += 1
            return link

    def _install(self, link: Link) -> None:
        self._link = link
        self._connected.set()

    def _uninstall(self, reason: str) -> None:
        """The connection is gone: what it delivered is the broker's to resend."""
        self._link = self._receiving = None
        self._connected = anyio.Event()
        self._last_error = reason
        self._order.clear()
        self._buffer.clear()

    def _on_message(self, link: Link, message: mqtt.MQTTMessage) -> None:
        if link is not self._receiving:
            return
        self._seq += 1
        token = None
        if message.qos > 0:
            token = _Delivery(link, message.mid, message.qos)
            self._order.append(token)
        record = build_record(
            message,
            broker=self.broker.location,
            client_id=self.client_id,
            receipt=f"{self._receipts}-{self._seq}",
            token=token,
        )
        self._buffer.append(record)
        self._arrived.set()

    # -- the Poller protocol -------------------------------------------------------------

    async def poll(self, max_records: int) -> Sequence[Record]:
        """Up to ``max_records`` received messages, waiting about a second for the first."""
        if not self._buffer:
            if self._link is None:
                with anyio.move_on_after(POLL_WAIT_S):
                    await self._connected.wait()
                if self._link is None:
                    raise SourceUnavailable(
                        f"{self.spec.name}: MQTT broker {self.broker.location} unavailable: "
                        f"{self._last_error}"
                    )
            self._arrived = anyio.Event()
            with anyio.move_on_after(POLL_WAIT_S):
                await self._arrived.wait()
        buffer = self._buffer
        count = min(max_records, len(buffer))
        return [buffer.popleft() for _ in range(count)]

    async def ack(self, records: Sequence[Record]) -> None:
        """Mark the records done and send the PUBACKs that may go: with ``puback_order:
        receive`` those of the done prefix of this connection's deliveries (in receive
        order); with ``topic`` those of ``records`` at once (the dispatcher hands over
        each topic's completed prefix, in order)."""
        link = self._link
        by_topic = self.puback_order == "topic"
        for record in records:
            token = record.token
            if isinstance(token, _Delivery) and not token.released and not token.done:
                token.done = True
                if by_topic and token.link is link and link is not None:
                    link.ack(token.mid, token.qos)
        order = self._order
        while order and order[0].done:
            delivery = order.popleft()
            if not by_topic and delivery.link is link and link is not None:
                link.ack(delivery.mid, delivery.qos)

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        """Never PUBACK these on this connection: the broker resends them (DUP=1) on the
        session's next connection. ``delay_s`` cannot be honoured by MQTT."""
        released = 0
        for record in records:
            token = record.token
            if isinstance(token, _Delivery) and not token.done:
                token.released = True
                released += 1
        if released:
            log.info("mqtt.released", trigger=self.spec.name, count=released)

    def batch_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [record.event for record in records]}

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return batch_info(records, self.broker.location, self.client_id)

    def statistics(self) -> Mapping[str, float]:
        """``buffered`` (received, not yet polled), ``unacknowledged`` (received, PUBACK
        not sent), ``connected`` (1/0), ``reconnects``."""
        return {
            "buffered": float(len(self._buffer)),
            "unacknowledged": float(len(self._order)),
            "connected": 1.0 if self._link is not None else 0.0,
            "reconnects": float(self.reconnects),
        }


def _hostname() -> str:
    """The replica's name: $HOSTNAME (a Kubernetes pod's), else the host name."""
    return os.environ.get("HOSTNAME") or socket.gethostname()
