"""Pull requests to a JetStream consumer, read without a task per message.

nats-py's ``PullSubscription.fetch`` waits for each message with ``next_msg`` (a task,
a timer and a uuid per message): over half the CPU of a busy consumer. :class:`Puller`
speaks the same protocol (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with a batch
size, replies to an inbox of its own) and takes the messages from a subscription
callback into a deque:

* ``pull(n)`` first asks with ``no_wait`` (what is there now, up to ``n``: the server ends
  the request with a 404/408 status when it has no more), and only when that brought
  nothing, with a request that lingers up to ``wait_s``; it returns as soon as a message
  is there. Messages of a lingering request that arrive later wait in the deque for the
  next ``pull`` (``backlog()``: the poller keeps them alive with in-progress acks too).
* A request that is still open is not repeated: at most one lingering request at a time,
  so messages are never asked for beyond what the caller can hold.
* Status 409 (consumer deleted, leadership change, too many waiting pulls) and 5xx
  raise :class:`PullFailed`.
"""

from __future__ import annotations

import json
from collections import deque

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["PullFailed", "Puller"]

_TERMINAL = frozenset({"404", "408"})
MIN_LINGER_S = 0.05
LOST_AFTER_S = 5.0
"""A request not ended this long after its expiry is taken as lost (a reconnect)."""


class PullFailed(Exception):
    """The server ended a pull request with an error status."""


class Puller:
    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._msgs: deque[Msg] = deque()
        self._open: dict[str, int] = {}  # reply subject -> messages still to come
        self._expiry: dict[str, float] = {}  # reply subject -> when to stop waiting for it
        self._next = 0
        self._changed = anyio.Event()
        self._error: str | None = None

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    def backlog(self) -> list[Msg]:
        """Messages delivered and not yet returned by :meth:`pull`."""
        return list(self._msgs)

    def take_backlog(self) -> list[Msg]:
        msgs = list(self._msgs)
        self._msgs.clear()
        return msgs

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is None:
            self._msgs.append(msg)
            # the server serves requests in order: this message is the oldest open one's
            for reply, left in self._open.items():
                if left <= 1:
                    del self._open[reply]
                else:
                    self._open[reply] = left - 1
                break
        elif status == "100":  # idle heartbeat
            return
        else:
            self._open.pop(msg.subject, None)
            if status not in _TERMINAL:
                assert headers is not None
                self._error = f"{status} {headers.get('Description', '')}".strip()
        self._changed.set()

    async def _request(self, count: int, *, no_wait: bool, wait_s: float) -> str:
        self._next += 1
        reply = f"{self._inbox}.{self._next}"
        body: dict[str, object] = {"batch": count}
        if no_wait:
            body["no_wait"] = True
        else:
            body["expires"] = int(wait_s * 1e9)
        self._open[reply] = count
        self._expiry[reply] = anyio.current_time() + (0 if no_wait else wait_s) + LOST_AFTER_S
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=reply)
        return reply

    async def _wait(self, done: object, deadline: float) -> None:
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            while not done():  # type: ignore[operator]
                self._check()
                self._changed = anyio.Event()
                await self._changed.wait()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise PullFailed(error)

    async def pull(self, count: int, wait_s: float) -> list[Msg]:
        """Up to ``count`` messages, waiting at most about ``wait_s`` when there are none."""
        now = anyio.current_time()
        deadline = now + wait_s
        for reply, expiry in list(self._expiry.items()):
            if reply not in self._open:
                del self._expiry[reply]
            elif expiry < now:
                del self._expiry[reply], self._open[reply]
        msgs = self._msgs
        if not msgs and not self._open:
            reply = await self._request(count, no_wait=True, wait_s=wait_s)
            await self._wait(lambda: reply not in self._open, deadline)
        while not msgs:
            left = deadline - anyio.current_time()
            if left < MIN_LINGER_S:
                break
            if not self._open:  # (an earlier poll's lingering request may still be open)
                await self._request(count, no_wait=False, wait_s=left)
            await self._wait(lambda: bool(msgs) or not self._open, deadline)
        return [msgs.popleft() for _ in range(min(count, len(msgs)))]
