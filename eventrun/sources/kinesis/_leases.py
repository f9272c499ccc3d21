"""Shard leases and replica membership on the store's ``claim`` (set-if-absent with TTL).

The only atomic primitive a source gets is :meth:`KeyValueState.claim` (SQLite: an
upsert guarded by expiry; Redis: SET NX PX). Leases are built from it with time
**epochs** of ``lease_s`` seconds (``epoch = floor(wall time / lease_s)``):

* holding shard S in epoch e means having won the claim of ``lease:S:e`` (stored as
  ``lease:S:{e % 4}``: a key is used again once its last claim expired);
* a holder renews by claiming ``lease:S:e+1`` during epoch e, before anyone else may try
  (others only ever claim the *current* epoch), so a live holder keeps its shard;
* a holder that dies claims nothing more: from the epoch after its last claim, the key of
  the current epoch is free and another replica wins it. Takeover takes at most two
  epochs;
* a holder that stops cleanly releases its claims (:meth:`Leases.release_all`): the next
  replica, or the same daemon restarted, takes the shards at its next renewal;
* membership works the same way with slots: a replica holds ``member:i:e`` for the
  lowest free slot i, renewed ahead like a lease; the live replicas are the slots
  claimed for the current epoch, and a replica's rank is its slot's position among them.

Each replica prefers the shards whose index (in shard-id order, finished shards left
out) modulo the number of live replicas is its rank; it claims only those, and stops
renewing the others: it reads them on until their lease runs out, and then their
preferred replica wins them (no gap, no overlap, up to clock skew). Wall clocks
of replicas should agree to well under ``lease_s``; a skew makes a handover overlap, which
at-least-once delivery tolerates (the new holder starts from the last checkpoint).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence

from eventrun.abc import KeyValueState

__all__ = ["MAX_MEMBERS", "Leases"]

MAX_MEMBERS = 32
"""Replicas one trigger can be split over (member slots scanned per renewal)."""
KEY_CYCLE = 4
"""Epochs after which a claim key is used again (claims expire two epochs on)."""


class Leases:
    """This daemon's membership and shard leases for one trigger."""

    def __init__(
        self,
        state: KeyValueState,
        lease_s: float,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.lease_s = lease_s
        self.now = now
        self.owner = f"{socket.gethostname()}-{os.getpid()}"
        self._slot: int | None = None
        self._slot_epochs: set[int] = set()
        self._held: dict[str, set[int]] = {}
        self.members = 1
        self.rank = 0

    def epoch(self, at: float | None = None) -> int:
        return math.floor((self.now() if at is None else at) / self.lease_s)

    def _ttl(self, epoch: int) -> float:
        """Keep the key of ``epoch`` until one epoch after it ends."""
        return max(1.0, (epoch + 2) * self.lease_s - self.now())

    @staticmethod
    def _key(key: str, epoch: int) -> str:
        """The store key of ``key`` in ``epoch``: keys are reused every ``KEY_CYCLE``
        epochs (a claim lasts at most two), so a store whose expired keys stay (SQLite)
        holds a bounded number of them."""
        return f"{key}:{epoch % KEY_CYCLE}"

    async def _claim(self, key: str, epoch: int) -> bool:
        return await self.state.claim(self._key(key, epoch), self._ttl(epoch))

    # -- membership -------------------------------------------------------------------

    async def refresh_members(self) -> None:
        """Hold a member slot for this epoch and the next; count the live replicas."""
        e = self.epoch()
        self._slot_epochs = {x for x in self._slot_epochs if x >= e}
        if self._slot is not None and e not in self._slot_epochs:
            self._slot = None  # lost it (a stall longer than an epoch): find a new one
        if self._slot is None:
            for slot in range(MAX_MEMBERS):
                if await self._claim(f"member:{slot}", e):
                    self._slot, self._slot_epochs = slot, {e}
                    break
        renew = self._slot is not None and e + 1 not in self._slot_epochs
        if renew and await self._claim(f"member:{self._slot}", e + 1):
            self._slot_epochs.add(e + 1)
        live: list[int] = []
        misses = 0
        for slot in range(MAX_MEMBERS):
            if slot == self._slot or await self.state.get(self._key(f"member:{slot}", e)):
                live.append(slot)
                misses = 0
            else:
                misses += 1
                if misses >= 4 and (self._slot is None or slot > self._slot):
                    break
        self.members = max(1, len(live))
        self.rank = live.index(self._slot) if self._slot in live else 0

    def preferred(self, shards: Sequence[str]) -> list[str]:
        """The shards (of ``shards``, in order) this replica should hold."""
        ordered = sorted(shards)
        return [s for i, s in enumerate(ordered) if i % self.members == self.rank]

    # -- shard leases -----------------------------------------------------------------

    def holds(self, shard: str) -> bool:
        """True while this replica's lease on ``shard`` covers the current epoch."""
        return self.epoch() in self._held.get(shard, ())

    def valid_until(self, shard: str) -> float:
        """Wall time at which the lease on ``shard`` runs out (0: not held)."""
        epochs = self._held.get(shard)
        return (max(epochs) + 1) * self.lease_s if epochs else 0.0

    async def acquire(self, shard: str) -> bool:
        """Take or renew the lease on ``shard``; True when held for the current epoch."""
        e = self.epoch()
        held = self._held.setdefault(shard, set())
        held.intersection_update({e, e + 1})
        if e not in held and await self._claim(f"lease:{shard}", e):
            held.add(e)
        if e in held and e + 1 not in held and await self._claim(f"lease:{shard}", e + 1):
            held.add(e + 1)
        if not held:
            del self._held[shard]
        return e in held

    def give_up(self, shard: str) -> None:
        """Stop renewing ``shard`` (its keys expire; its preferred replica takes it)."""
        self._held.pop(shard, None)

    async def release_all(self) -> None:
        """Release every claim still held (shard leases, the member slot): a clean stop."""
        e = self.epoch()
        for shard, epochs in list(self._held.items()):
            for epoch in sorted(x for x in epochs if x >= e):
                await self.state.release(self._key(f"lease:{shard}", epoch))
        if self._slot is not None:
            for epoch in sorted(x for x in self._slot_epochs if x >= e):
                await self.state.release(self._key(f"member:{self._slot}", epoch))
        self._held.clear()
        self._slot, self._slot_epochs = None, set()

    def held(self) -> list[str]:
        e = self.epoch()
        return [s for s, epochs in self._held.items() if e in epochs]
