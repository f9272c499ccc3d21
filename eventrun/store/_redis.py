"""The shared store on Redis (``redis://host:6379/0``), for replicas of one config.

Layout, for queue ``Q`` under the key prefix ``P`` (default ``eventrun:``)::

    P seq                   INCR counter: the insertion sequence of every entry
    P queues                SET of queue names that were ever put to
    P q:{Q}:all             ZSET id -> seq          every entry (order, depth, peek)
    P q:{Q}:ready           ZSET id -> seq          available now, not leased
    P q:{Q}:wait            ZSET id -> visible_at   leased (lease deadline) or delayed
    P q:{Q}:e:ID            HASH payload, seq, enqueued_at, available_at, attempts, meta
    P q:{Q}:bytes           STRING  payload bytes of every entry (the bytes cap)
    P q:{Q}:time            ZSET id -> enqueued_at  (retention: trim by age)
    P kv:KEY                STRING, claims with SET NX PX

Every mutation is one Lua script, so it is atomic: a lease first moves the due entries
of ``wait`` back into ``ready`` and then pops the lowest ``seq``s, so several daemons
sharing the store never lease one entry twice and a lease held by a dead daemon comes
back once its deadline passes. Entry keys are built inside the scripts, so this needs a
standalone Redis (or a primary with replicas), not Redis Cluster. The put script checks
the caps (ZCARD and the bytes counter) before it writes anything. Queues written before
``bytes`` and ``time`` existed are counted / indexed once, by the first put or trim.
Times are the callers' epoch seconds except claims, whose TTL runs on the Redis server's
clock.

``redis`` is imported when the store is entered, so importing this module stays light.

Why this module is over 400 lines: it is one whole backend of the :class:`Store` interface,
mostly Lua scripts that must stay next to the methods that call them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import structlog

from eventrun.abc import Clock
from eventrun.common import public_destination
from eventrun.exceptions import QueueFull, StoreError
from eventrun.store._base import FullQueues, QueueEntry, QueueLimits, StoreFailures

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

_log = structlog.get_logger("eventrun.store")
_T = TypeVar("_T")
_FIELDS = ("payload", "enqueued_at", "available_at", "attempts", "meta")
_PURGE_CHUNK = 1000

# Counts the payload bytes of a queue from before the bytes counter existed.
# KEYS[2] all, bytes key in B, entry prefix in P.
_COUNT_BYTES = """
local function count_bytes(all, bytes, prefix)
  local total = 0
  for _, id in ipairs(redis.call('ZRANGE', all, 0, -1)) do
    total = total + redis.call('HSTRLEN', prefix .. id, 'payload')
  end
  redis.call('SET', bytes, total)
  return total
end
"""

# KEYS: seq, all, ready, wait, queues, bytes, time  ARGV: queue, entry_prefix, enqueued_at,
# available_at, meta, max_depth, max_bytes, then id, payload pairs. Returns n, or -1 / -2
# when the depth / bytes cap refuses the put (nothing written).
_PUT = (
    _COUNT_BYTES
    + """
local n = (#ARGV - 7) / 2
local depth = redis.call('ZCARD', KEYS[2])
local adding = 0
for i = 0, n - 1 do adding = adding + #ARGV[9 + 2 * i] end
if depth > 0 then
  if depth + n > tonumber(ARGV[6]) then return -1 end
  local size = redis.call('GET', KEYS[6])
  size = size and tonumber(size) or count_bytes(KEYS[2], KEYS[6], ARGV[2])
  if size + adding > tonumber(ARGV[7]) then return -2 end
elseif not redis.call('GET', KEYS[6]) then
  redis.call('SET', KEYS[6], 0)
end
local last = redis.call('INCRBY', KEYS[1], n)
local avail = tonumber(ARGV[4])
for i = 0, n - 1 do
  local id = ARGV[8 + 2 * i]
  local seq = last - n + 1 + i
  redis.call('HSET', ARGV[2] .. id, 'payload', ARGV[9 + 2 * i], 'seq', seq,
    'enqueued_at', ARGV[3], 'available_at', ARGV[4], 'attempts', 0, 'meta', ARGV[5])
  redis.call('ZADD', KEYS[2], seq, id)
  redis.call('ZADD', KEYS[7], ARGV[3], id)
  if avail > 0 then
    redis.call('ZADD', KEYS[4], ARGV[4], id)
  else
    redis.call('ZADD', KEYS[3], seq, id)
  end
end
redis.call('INCRBY', KEYS[6], adding)
redis.call('SADD', KEYS[5], ARGV[1])
return n
"""
)

# KEYS: ready, wait  ARGV: now, limit, lease_until, entry_prefix
_RELEASE = """
if redis.call('PTTL', KEYS[1]) > 0 then
  redis.call('DEL', KEYS[1])
end
"""

_LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 10000)
for _, id in ipairs(due) do
  local seq = redis.call('HGET', ARGV[4] .. id, 'seq')
  redis.call('ZREM', KEYS[2], id)
  if seq then redis.call('ZADD', KEYS[1], seq, id) end
end
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  local f = redis.call('HMGET', ARGV[4] .. id,
    'payload', 'enqueued_at', 'available_at', 'attempts', 'meta')
  out[#out + 1] = id
  for j = 1, 5 do out[#out + 1] = f[j] end
end
return out
"""

# Deletes one entry of every index; KEYS all, ready, wait, bytes, time.
_REMOVE = """
local function remove(keys, prefix, id)
  if redis.call('ZREM', keys[1], id) == 0 then return 0 end
  redis.call('ZREM', keys[2], id)
  redis.call('ZREM', keys[3], id)
  redis.call('ZREM', keys[5], id)
  local size = redis.call('HSTRLEN', prefix .. id, 'payload')
  redis.call('DEL', prefix .. id)
  if size > 0 and redis.call('DECRBY', keys[4], size) < 0 then redis.call('SET', keys[4], 0) end
  return 1
end
"""

# KEYS: all, ready, wait, bytes, time  ARGV: entry_prefix, ids...
_ACK = (
    _REMOVE
    + """
local n = 0
for i = 2, #ARGV do n = n + remove(KEYS, ARGV[1], ARGV[i]) end
return n
"""
)

# KEYS: all, ready, wait  ARGV: entry_prefix, id, available_at, attempts
_RETRY = """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('HSET', ARGV[1] .. ARGV[2], 'available_at', ARGV[3], 'attempts', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
"""

# KEYS: all, ready, wait, bytes, time  ARGV: entry_prefix, chunk
_PURGE = (
    _REMOVE
    + """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do remove(KEYS, ARGV[1], id) end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SET', KEYS[4], 0) end
return #ids
"""
)

# KEYS: all, ready, wait, bytes, time  ARGV: entry_prefix, before, keep (-1: any), chunk.
# Removes up to ``chunk`` entries put before ``before``, then up to ``chunk`` of the oldest
# beyond ``keep``; returns how many. Entries put before ``time`` existed are indexed first.
_TRIM = (
    _REMOVE
    + """
local depth = redis.call('ZCARD', KEYS[1])
if redis.call('ZCARD', KEYS[5]) < depth then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if not redis.call('ZSCORE', KEYS[5], id) then
      local at = redis.call('HGET', ARGV[1] .. id, 'enqueued_at')
      if at then redis.call('ZADD', KEYS[5], at, id) end
    end
  end
end
local chunk = tonumber(ARGV[4])
local n = 0
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[2], 'LIMIT', 0, chunk)
for _, id in ipairs(old) do n = n + remove(KEYS, ARGV[1], id) end
local keep = tonumber(ARGV[3])
if keep >= 0 then
  local excess = math.min(redis.call('ZCARD', KEYS[1]) - keep, chunk)
  if excess > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
      n = n + remove(KEYS, ARGV[1], id)
    end
  end
end
return n
"""
)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(queue: str, entry_id: object, fields: Sequence[Any]) -> QueueEntry | None:
    payload, enqueued_at, available_at, attempts, meta = fields
    if payload is None:
        return None
    return QueueEntry(
        id=_text(entry_id),
        queue=queue,
        payload=bytes(payload),
        enqueued_at=float(enqueued_at),
        available_at=float(available_at),
        attempts=int(attempts),
        meta=json.loads(meta) if meta != b"{}" else {},
    )


class RedisStore:
    """The :class:`eventrun.store.Store` on a Redis server, safe to share between daemons.

    Use as ``async with RedisStore(url) as store``; entering pings the server. ``clock``
    (default: the system's) stamps ``enqueued_at``. Every
    method raises :class:`StoreError` when Redis cannot be reached or fails.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "eventrun:",
        clock: Clock | None = None,
        limits: QueueLimits | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._time = clock.time if clock is not None else time.time
        self.limits = limits or QueueLimits()
        self.full = FullQueues()
        self.failures = StoreFailures()
        self._client: Redis | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._scripts: dict[str, Callable[..., Awaitable[Any]]] = {}

    async def __aenter__(self) -> Self:
        import redis.asyncio
        import redis.exceptions

        self._errors = (redis.exceptions.RedisError, OSError)
        client = redis.asyncio.Redis.from_url(self.url, decode_responses=False)
        self._client = client
        for name, lua in (
            ("put", _PUT),
            ("lease", _LEASE),
            ("ack", _ACK),
            ("retry", _RETRY),
            ("purge", _PURGE),
            ("trim", _TRIM),
            ("release", _RELEASE),
        ):
            self._scripts[name] = client.register_script(lua)
        try:
            await self._call(client.ping())
        except BaseException:
            self._client = None
            await client.aclose()
            raise
        _log.debug("store.opened", backend="redis", prefix=self.prefix)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def _redis(self) -> Redis:
        if self._client is None:
            raise StoreError("the Redis store is closed (use it inside `async with`)")
        return self._client

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        try:
            result = await awaitable
        except self._errors as exc:
            self.failures.failed("error", str(exc))
            raise StoreError(f"Redis store {self._safe_url()}: {exc}") from exc
        self.failures.succeeded()
        return result

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        self._redis()
        return await self._call(self._scripts[name](keys=keys, args=args))

    def _safe_url(self) -> str:
        """The URL without a password, for messages."""
        return public_destination(self.url)

    def _keys(self, queue: str) -> tuple[str, str, str, str]:
        base = f"{self.prefix}q:{{{queue}}}:"
        return base + "all", base + "ready", base + "wait", base + "e:"

    def _counted(self, queue: str) -> list[str]:
        """The keys a removal updates: all, ready, wait, bytes, time."""
        base = f"{self.prefix}q:{{{queue}}}:"
        return [base + "all", base + "ready", base + "wait", base + "bytes", base + "time"]

    # -- queues ----------------------------------------------------------------------

    async def put(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        available_at: float = 0.0,
        meta: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Append entries atomically (one script); return their ids in order."""
        ids = [str(uuid.uuid4()) for _ in payloads]
        if not ids:
            return ids
        all_, ready, wait, entry = self._keys(queue)
        args: list[Any] = [
            queue,
            entry,
            repr(self._time()),
            repr(float(available_at)),
            json.dumps(dict(meta)) if meta else "{}",
            self.limits.max_depth,
            self.limits.max_bytes,
        ]
        for entry_id, payload in zip(ids, payloads, strict=True):
            args += (entry_id, payload)
        counted = self._counted(queue)
        keys = [self.prefix + "seq", all_, ready, wait, self.prefix + "queues", *counted[3:]]
        n = int(await self._script("put", keys, args))
        if n < 0:
            what, cap = (
                ("depth", self.limits.max_depth) if n == -1 else ("bytes", self.limits.max_bytes)
            )
            exc = QueueFull(queue, what, cap)
            self.full.refused(exc)
            raise exc
        self.full.accepted(queue)
        return ids

    async def lease(
        self, queue: str, *, now: float, limit: int, lease_s: float
    ) -> list[QueueEntry]:
        """Take up to ``limit`` available entries, oldest first, hidden until ``now + lease_s``."""
        if limit <= 0:
            return []
        _, ready, wait, entry = self._keys(queue)
        args = [repr(float(now)), limit, repr(float(now + lease_s)), entry]
        flat = await self._script("lease", [ready, wait], args)
        entries = []
        for i in range(0, len(flat), 6):
            found = _entry(queue, flat[i], flat[i + 1 : i + 6])
            if found is not None:
                entries.append(found)
        return entries

    async def ack(self, queue: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        await self._script("ack", self._counted(queue), [self._keys(queue)[3], *ids])

    async def retry(self, queue: str, entry_id: str, *, available_at: float, attempts: int) -> None:
        all_, ready, wait, entry = self._keys(queue)
        args = [entry, entry_id, repr(float(available_at)), attempts]
        await self._script("retry", [all_, ready, wait], args)

    async def peek(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueueEntry]:
        client = self._redis()
        all_, _, _, entry = self._keys(queue)
        if limit <= 0:
            return []
        ids: Sequence[object] = await self._call(client.zrange(all_, offset, offset + limit - 1))
        if not ids:
            return []
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hmget(entry + _text(entry_id), _FIELDS)
        rows = await self._call(pipe.execute())
        found = (_entry(queue, i, row) for i, row in zip(ids, rows, strict=True))
        return [e for e in found if e is not None]

    async def get(self, queue: str, entry_id: str) -> QueueEntry | None:
        client = self._redis()
        entry = self._keys(queue)[3]
        row = await self._call(client.hmget(entry + entry_id, _FIELDS))
        return _entry(queue, entry_id, row)

    async def depth(self, queue: str) -> int:
        return int(await self._call(self._redis().zcard(self._keys(queue)[0])))

    async def usage(self, queue: str) -> tuple[int, int]:
        keys = self._counted(queue)
        pipe = self._redis().pipeline(transaction=False)
        pipe.zcard(keys[0])
        pipe.get(keys[3])
        depth, size = await self._call(pipe.execute())
        return int(depth), int(size or 0)

    async def trim(self, queue: str, *, enqueued_before: float, keep: int | None = None) -> int:
        """Delete entries put before ``enqueued_before`` (by the ``time`` index), then the
        oldest beyond ``keep``, in scripts of at most 1,000 entries each."""
        keys, entry = self._counted(queue), self._keys(queue)[3]
        args = [entry, repr(float(enqueued_before)), -1 if keep is None else keep, _PURGE_CHUNK]
        total = 0
        while True:
            n = int(await self._script("trim", keys, args))
            total += n
            if n < _PURGE_CHUNK:
                return total

    async def queues(self) -> list[str]:
        client = self._redis()
        members: Iterable[object] = await self._call(client.smembers(self.prefix + "queues"))
        names = sorted(_text(n) for n in members)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.zcard(self._keys(name)[0])
        depths = await self._call(pipe.execute()) if names else []
        return [name for name, depth in zip(names, depths, strict=True) if depth]

    async def purge(self, queue: str) -> int:
        keys, entry = self._counted(queue), self._keys(queue)[3]
        total = 0
        while True:
            n = int(await self._script("purge", keys, [entry, _PURGE_CHUNK]))
            total += n
            if n < _PURGE_CHUNK:
                return total

    # -- key/value -------------------------------------------------------------------

    async def kv_get(self, key: str) -> bytes | None:
        value = await self._call(self._redis().get(self.prefix + "kv:" + key))
        return value.encode() if isinstance(value, str) else value

    async def kv_set(self, key: str, value: bytes) -> None:
        """Set ``key`` without expiry (replacing any claim on it)."""
        await self._call(self._redis().set(self.prefix + "kv:" + key, value))

    async def kv_claim(self, key: str, ttl_s: float, *, now: float) -> bool:
        """SET NX PX: True if this caller won. The TTL runs on the server's clock (``now``
        is not used: replicas with skewed clocks still agree)."""
        ttl_ms = max(1, round(ttl_s * 1000))
        won = await self._call(
            self._redis().set(self.prefix + "kv:" + key, b"1", nx=True, px=ttl_ms)
        )
        return bool(won)

    async def kv_release(self, key: str) -> None:
        """Delete the claim on ``key``: only a key with a TTL (a plain value stays)."""
        await self._script("release", [self.prefix + "kv:" + key], [])
