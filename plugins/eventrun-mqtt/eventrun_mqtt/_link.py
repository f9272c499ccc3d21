"""One MQTT 5 connection: a paho-mqtt client driven by the running asyncio loop.

paho-mqtt does the protocol (packets, keep-alive, MQTT 5 properties, ``manual_ack``);
this module gives it a loop without its network thread, the way aiomqtt does: the blocking
TCP connect runs in a worker thread, then the socket is watched with the loop's
``add_reader``/``add_writer`` (paho asks for the writer through
``on_socket_register_write``) and ``loop_misc`` runs once a second for keep-alive pings.
Everything after the connect happens on the loop's thread, so paho is never entered by
two threads, and a :class:`Link` can be opened and closed from any task (it owns no task).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

__all__ = ["Broker", "Link", "LinkError", "LinkRefused"]

CONNECT_TIMEOUT_S = 10.0
READS_PER_WAKEUP = 512
"""Packets read per readiness callback at most (paho reads one packet per loop_read)."""
_AUTH_CODES = {0x86, 0x87, 0x8C}  # bad user name or password, not authorized, bad auth method


class LinkError(Exception):
    """The broker cannot be reached, or the connection broke."""


class LinkRefused(LinkError):
    """The broker answered but refused: credentials, client id, a subscription."""

    def __init__(self, message: str, *, auth: bool = False) -> None:
        super().__init__(message)
        self.auth = auth


@dataclass(frozen=True, slots=True)
class Broker:
    """Where to connect, parsed from ``mqtt://[user[:password]@]host[:port]``."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> Broker:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    @property
    def location(self) -> str:
        """The broker without credentials, for logs and events."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


MessageCallback = Callable[["Link", mqtt.MQTTMessage], None]


class Link:
    """A connected MQTT 5 client (``await open()``, ``await close()``).

    ``lost`` is set once the connection is gone (broken, or closed); a Link is never
    reconnected: make a new one (the session lives on in the broker).
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        clean_start: bool,
        session_expiry_s: int,
        receive_maximum: int = 65535,
        keepalive_s: int = 30,
        on_message: MessageCallback | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._keepalive_s = keepalive_s
        self._on_message_cb = on_message
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set_context(ssl.create_default_context())
        client.max_inflight_messages_set(20)  # outgoing QoS 1: the broker's usual limit
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client
        self.lost = anyio.Event()
        self.lost_reason = ""
        self.session_present = False
        self.received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._connack = anyio.Event()
        self._connack_code: ReasonCode | None = None
        self._waiters: dict[int, tuple[anyio.Event, list[Any]]] = {}

    # -- opening and closing -------------------------------------------------------

    async def open(self) -> None:
        """Connect and wait for CONNACK; raise LinkError / LinkRefused."""
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        connect = partial(
            self.client.connect,
            self.broker.host,
            self.broker.port,
            keepalive=self._keepalive_s,
            clean_start=self._clean_start,
            properties=props,
        )
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                await anyio.to_thread.run_sync(connect, abandon_on_cancel=True)
        except (OSError, TimeoutError, ValueError) as exc:
            self._mark_lost(f"connect failed: {exc}")
            raise LinkError(f"cannot connect to {self.broker.location}: {exc}") from exc
        sock = self.client.socket()
        if sock is None:
            self._mark_lost("no socket after connect")
            raise LinkError(f"cannot connect to {self.broker.location}: no socket")
        self._fd = sock.fileno()
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write
        self.client.on_socket_close = self._socket_closing
        self._loop.add_reader(self._fd, self._readable)
        if self.client.want_write():
            self._loop.add_writer(self._fd, self._writable)
        self._timer = self._loop.call_later(1.0, self._misc)
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                await self._wait_connack()
        except TimeoutError:
            self._teardown("no CONNACK")
            where = self.broker.location
            raise LinkError(f"{where}: no CONNACK within {CONNECT_TIMEOUT_S:g} s") from None
        except BaseException:
            self._teardown("connect abandoned")
            raise

    async def _wait_connack(self) -> None:
        connack = anyio.Event()
        self._connack = connack
        async with anyio.create_task_group() as tg:

            async def watch_lost() -> None:
                await self.lost.wait()
                connack.set()

            tg.start_soon(watch_lost)
            await connack.wait()
            tg.cancel_scope.cancel()
        code = self._connack_code
        if code is None:
            raise LinkError(f"{self.broker.location} closed the connection: {self.lost_reason}")
        if code.is_failure:
            self._teardown(f"refused: {code}")
            raise LinkRefused(
                f"{self.broker.location} refused client {self.client_id!r}: {code}",
                auth=code.value in _AUTH_CODES,
            )

    async def close(self, timeout_s: float = 5.0) -> None:
        """Send DISCONNECT after whatever is queued (PUBACKs), wait for it to go out."""
        if not self.lost.is_set():
            self.client.disconnect()
            with anyio.move_on_after(timeout_s, shield=True):
                await self.lost.wait()
        self._teardown("closed")

    # -- requests ------------------------------------------------------------------

    async def subscribe(self, filters: list[str], timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """SUBSCRIBE with QoS 1 (retained messages only for a new subscription)."""
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        rc, mid = self.client.subscribe([(f, opts) for f in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"SUBSCRIBE to {self.broker.location} failed: {mqtt.error_string(rc)}")
        codes = await self._wait_for(mid, timeout_s, "SUBACK")
        for topic, code in zip(filters, codes, strict=False):
            if isinstance(code, ReasonCode) and code.is_failure:
                raise LinkRefused(
                    f"{self.broker.location} refused the subscription {topic!r}: {code}"
                )

    def publish(self, topic: str, payload: bytes, properties: Properties | None) -> int:
        """Queue a QoS 1 PUBLISH; returns its packet id for :meth:`wait_puback`."""
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(
                f"PUBLISH to {self.broker.location} failed: {mqtt.error_string(info.rc)}"
            )
        self._waiters.setdefault(info.mid, (anyio.Event(), []))
        return info.mid

    async def wait_puback(self, mid: int, timeout_s: float) -> ReasonCode | None:
        codes = await self._wait_for(mid, timeout_s, "PUBACK")
        return codes[0] if codes and isinstance(codes[0], ReasonCode) else None

    async def _wait_for(self, mid: int, timeout_s: float, what: str) -> list[Any]:
        event, result = self._waiters.setdefault(mid, (anyio.Event(), []))
        try:
            with anyio.move_on_after(timeout_s):
                async with anyio.create_task_group() as tg:

                    async def watch_lost() -> None:
                        await self.lost.wait()
                        event.set()

                    tg.start_soon(watch_lost)
                    await event.wait()
                    tg.cancel_scope.cancel()
        finally:
            self._waiters.pop(mid, None)
        if not result:
            why = self.lost_reason if self.lost.is_set() else f"no {what} within {timeout_s:g} s"
            raise LinkError(f"{self.broker.location}: {why}")
        return result

    def ack(self, mid: int, qos: int) -> bool:
        """Send the PUBACK of an incoming message (False when the link is gone)."""
        if self.lost.is_set():
            return False
        return self.client.ack(mid, qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- paho callbacks (all on the loop's thread after open) ------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        self._connack_code = code
        self.session_present = bool(getattr(flags, "session_present", False))
        self._connack.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        self._mark_lost(f"disconnected: {code}")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._resolve(mid, list(codes))

    def _on_publish(self, client: Any, userdata: Any, mid: int, code: Any, props: Any) -> None:
        self._resolve(mid, [code])

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.received += 1
        if self._on_message_cb is not None:
            self._on_message_cb(self, message)

    def _resolve(self, mid: int, result: list[Any]) -> None:
        waiter = self._waiters.get(mid)
        if waiter is None:
            self._waiters[mid] = (anyio.Event(), result)
            self._waiters[mid][0].set()
            return
        waiter[1][:] = result
        waiter[0].set()

    # -- socket plumbing -----------------------------------------------------------

    def _readable(self) -> None:
        try:
            for _ in range(READS_PER_WAKEUP):
                before = self.received
                rc = self.client.loop_read()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._teardown(f"read failed: {mqtt.error_string(rc)}")
                    return
                if self.received == before:  # a partial packet, or not a PUBLISH
                    return
        except Exception as exc:  # paho raises on a broken socket (EPIPE, SSL errors)
            self._teardown(f"read failed: {exc}")

    def _writable(self) -> None:
        try:
            rc = self.client.loop_write()
        except Exception as exc:
            self._teardown(f"write failed: {exc}")
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._teardown(f"write failed: {mqtt.error_string(rc)}")

    def _misc(self) -> None:
        self._timer = None
        if self.lost.is_set():
            return
        rc = self.client.loop_misc()  # keep-alive PINGREQ, and its timeout
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._teardown(f"keep-alive failed: {mqtt.error_string(rc)}")
        elif self._loop is not None:
            self._timer = self._loop.call_later(1.0, self._misc)

    def _register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.add_writer(self._fd, self._writable)

    def _unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def _socket_closing(self, client: Any, userdata: Any, sock: Any) -> None:
        # paho is about to close the socket: unwatch its fd first (a later socket may
        # get the same number)
        self._unwatch()
        self._mark_lost(self.lost_reason or "socket closed")

    def _unwatch(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = -1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    def _teardown(self, reason: str) -> None:
        self._mark_lost(reason)
        self._unwatch()
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
