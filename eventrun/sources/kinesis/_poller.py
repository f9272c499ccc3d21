"""The shard poller behind the ``kinesis`` and ``dynamodb_streams`` triggers.

Contract with the runtime (beyond :class:`eventrun.abc.Poller`, ``ordered = True``):

* ``state``: the runtime sets it to the trigger's :class:`~eventrun.abc.KeyValueState` (a
  slice of the store) before ``__aenter__``. It holds the checkpoint of each shard
  (``ckpt:SHARD`` = the last sequence number handled, ``SHARD_END`` once a closed shard
  was read to its end and handled) and the leases (``_leases``).
* A background task (started by ``__aenter__``, stopped by ``__aexit__``) lists the
  shards, renews this daemon's membership and leases every ``shard_lease / 4`` seconds,
  starts the shards it won (from the checkpoint, else ``starting_position``; a child of a
  reshard from its start, and only once every parent is ``SHARD_END``) and drops those it
  lost or gave up, calling the dispatcher's ``on_revoke`` so their buffered records go.
* ``poll`` hands out what was read ahead; when a shard's is used up it calls GetRecords
  (up to ``READ_LIMIT`` records) for each such shard that is due, concurrently, and keeps
  the answer. A shard that is caught up is read every ``poll_interval`` (Lambda's pace),
  one that is behind
  (``MillisBehindLatest`` > 0 or a full answer) again at once, within Kinesis's limit of
  five reads a second per shard (``READS_PER_S``). Throttling
  (ProvisionedThroughputExceeded...) backs that shard off exponentially and keeps its
  iterator; an expired iterator is renewed after the last record read.
* ``ack`` gets the contiguous handled prefix of each shard (success, filtered out, or
  delivered to ``on_failure``) and writes the last one's sequence number as the shard's
  checkpoint. ``release`` does nothing: an unhandled record is read again from the
  checkpoint by whoever holds the shard next.
* With ``tumbling_window``, shards hand out one window at a time (``_windows``) and
  ``on_result`` keeps the state each invocation returns.

Why this module is over 400 lines: the lease loop, the reads and the checkpoints share one
piece of state (the shards held, what each read ahead and had handled) whose invariants
are easiest to keep in one class; shapes, leases, windows and the API live elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from eventrun.abc import JSON, KeyValueState, Record, SourceSpec
from eventrun.brokers import kinesis as client_util
from eventrun.exceptions import SourceError, SourceUnavailable, StoreError
from eventrun.sources.kinesis._api import ShardApi, ShardInfo, translate
from eventrun.sources.kinesis._leases import Leases
from eventrun.sources.kinesis._shard import READS_PER_S, Shard
from eventrun.sources.kinesis._windows import is_final

__all__ = ["READS_PER_S", "SHARD_END", "StreamPoller"]

log = structlog.get_logger("eventrun.sources.kinesis")

SHARD_END = b"SHARD_END"
THROTTLE_CAP_S = 30.0
POLL_WAIT_S = 1.0
RELEASE_WAIT_S = 2.0
"""At a clean stop, how long releasing the leases may take (else they run out)."""
READ_LIMIT = 10_000
"""Records one GetRecords asks for (Kinesis's most; the poller keeps the rest of an answer
and hands it out as the dispatcher has room, as Lambda and the KCL do)."""


class StreamPoller:
    """Poller for one Kinesis stream or DynamoDB stream (see the module docstring)."""

    ordered = True

    def __init__(
        self,
        spec: SourceSpec,
        open_api: Callable[[contextlib.AsyncExitStack], Any],
    ) -> None:
        self.spec = spec
        cfg = spec.config
        self.state: KeyValueState | None = None
        self.on_revoke: Callable[[frozenset[str]], Any] | None = None
        self._open_api = open_api
        self.api: ShardApi | None = None
        self.lease_s = float(getattr(cfg, "shard_lease", 10.0))
        self.poll_interval_s = float(getattr(cfg, "poll_interval", 1.0))
        self.starting_position = str(getattr(cfg, "starting_position", "TRIM_HORIZON"))
        self.starting_ts: float | None = getattr(cfg, "starting_position_timestamp", None)
        self.window_s = float(getattr(cfg, "tumbling_window", 0.0) or 0.0)
        self._stack = contextlib.AsyncExitStack()
        self._leases: Leases | None = None
        self._owned: dict[str, Shard] = {}
        self._finished: set[str] = set()
        self._known: dict[str, ShardInfo] = {}
        self._wake = anyio.Event()
        self._tick_now = anyio.Event()
        self._tg: TaskGroup | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.state is None:
            raise SourceError(f"{self.spec.name}: the shard poller needs the store (state)")
        try:
            self.api = await self._open_api(self._stack)
            await self.api.connect()
        except BaseException as exc:
            await self._stack.aclose()
            if isinstance(exc, Exception):
                raise self._translate(exc, "connect") from exc
            raise
        if self._leases is None:  # kept across reconnects: the claims won are still ours
            self._leases = Leases(self.state, self.lease_s)
        log.info(
            "stream.connected",
            trigger=self.spec.name,
            kind=self.api.kind,
            stream=self.api.arn,
            lease_s=self.lease_s,
        )
        # the lease loop's task group wraps the body of ``async with poller`` (entered
        # here, left first in __aexit__, in this same task)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await tg.start(self._lease_loop)
        except BaseException as exc:
            await self._close(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close(exc)

    async def _close(self, exc: BaseException | None) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(type(exc) if exc else None, exc, None)
        finally:
            with anyio.CancelScope(shield=True):
                if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
                    await self._release_leases()
                await self._stack.aclose()
            self._owned.clear()

    async def _release_leases(self) -> None:
        """A clean stop (not a reconnect, which keeps them): hand the leases over now
        rather than letting them run out (up to two ``shard_lease``)."""
        if self._leases is None:
            return
        held = self._leases.held()
        with anyio.move_on_after(RELEASE_WAIT_S):
            try:
                await self._leases.release_all()
            except StoreError as exc:
                log.warning("stream.lease_release_failed", trigger=self.spec.name, error=str(exc))
                return
            if held:
                log.info("stream.leases_released", trigger=self.spec.name, shards=sorted(held))

    def _translate(self, exc: Exception, action: str) -> Exception:
        cfg = self.spec.config
        stream = str(getattr(cfg, "stream", None) or getattr(cfg, "table", None) or "")
        return translate(exc, f"{self.spec.name}: {action} on stream {stream!r} failed")

    # -- leases ------------------------------------------------------------------------

    async def _lease_loop(self, *, task_status: TaskStatus[None]) -> None:
        first = True
        while True:
            try:
                await self._tick()
            except (SourceError, StoreError) as exc:
                log.warning("stream.lease_tick_failed", trigger=self.spec.name, error=str(exc))
            except Exception as exc:  # a supervisor: the next tick tries again
                log.exception("stream.lease_tick_crashed", trigger=self.spec.name, error=str(exc))
            if first:
                first = False
                task_status.started()
            self._tick_now = anyio.Event()
            with anyio.move_on_after(max(0.25, self.lease_s / 4)):
                await self._tick_now.wait()

    async def _tick(self) -> None:
        assert self.api is not None
        assert self._leases is not None
        try:
            shards = await self.api.list_shards()
        except Exception as exc:
            raise self._translate(exc, "list shards") from exc
        self._known = {s.id: s for s in shards}
        await self._note_finished(shards)
        active = [s.id for s in shards if s.id not in self._finished]
        await self._leases.refresh_members()
        want = set(self._leases.preferred(active))
        for sid in list(self._owned):
            if sid in want:
                continue
            if sid in self._known and sid not in self._finished and self._leases.holds(sid):
                continue  # rebalanced away: read on, unrenewed, until the lease runs out
            why = "finished" if sid in self._finished else "rebalanced"
            await self._drop(sid, why if sid in self._known else "gone")
        for sid in sorted(want):
            won = await self._leases.acquire(sid)
            if won and sid not in self._owned:
                self._owned[sid] = Shard(self._known[sid], self.window_s)
                log.info("stream.lease_acquired", trigger=self.spec.name, shard=sid)
            elif not won and sid in self._owned:
                await self._drop(sid, "lease_lost")
        for sid, shard in list(self._owned.items()):
            shard.info = self._known.get(sid, shard.info)
            if shard.iterator is None and not shard.ended and self._parents_done(shard.info):
                await self._start(shard)
        self._wake.set()

    async def _note_finished(self, shards: Sequence[ShardInfo]) -> None:
        """Closed shards some replica marked ``SHARD_END`` (remembered: it is final)."""
        assert self.state is not None
        for s in shards:
            finished = s.closed and s.id not in self._finished
            if finished and await self.state.get(f"ckpt:{s.id}") == SHARD_END:
                self._finished.add(s.id)

    def _parents_done(self, info: ShardInfo) -> bool:
        """Every parent is finished (or trimmed from the stream): the child may start."""
        return all(p in self._finished or p not in self._known for p in info.parents)

    async def _drop(self, sid: str, why: str) -> None:
        shard = self._owned.pop(sid, None)
        assert self._leases is not None
        self._leases.give_up(sid)
        if shard is None:
            return
        shard.revoked = True
        log.info("stream.lease_released", trigger=self.spec.name, shard=sid, reason=why)
        if self.on_revoke is not None:
            await self.on_revoke(frozenset({sid}))

    async def _start(self, shard: Shard) -> None:
        assert self.api is not None
        assert self.state is not None
        sid = shard.info.id
        checkpoint = await self.state.get(f"ckpt:{sid}")
        if checkpoint == SHARD_END:
            self._finished.add(sid)
            await self._drop(sid, "finished")
            return
        position: dict[str, Any]
        checkpoint = await self._restore_window(shard, checkpoint)
        if checkpoint:
            seq = checkpoint.decode()
            shard.acked = shard.fetched = seq
            kind, position = "AFTER_SEQUENCE_NUMBER", {"StartingSequenceNumber": seq}
        elif shard.info.parents:
            kind, position = "TRIM_HORIZON", {}  # a child of a reshard: all of it, in order
        elif self.starting_position == "AT_TIMESTAMP" and self.starting_ts is not None:
            when = datetime.fromtimestamp(self.starting_ts, UTC)
            kind, position = "AT_TIMESTAMP", {"Timestamp": when}
        else:
            kind, position = self.starting_position, {}
        try:
            shard.iterator = await self.api.iterator(sid, kind, **position)
        except Exception as exc:
            raise self._translate(exc, f"GetShardIterator({sid})") from exc
        log.info("stream.shard_started", trigger=self.spec.name, shard=sid, position=kind)

    async def _restore_window(self, shard: Shard, checkpoint: bytes | None) -> bytes | None:
        """Resume a tumbling window saved with its position; the position to start after
        (the later of the checkpoint and the window's last handled record)."""
        if shard.gate is None:
            return checkpoint
        assert self.state is not None
        raw = await self.state.get(f"window:{shard.info.id}")
        doc = json.loads(raw) if raw else {}
        shard.gate.restore(doc)
        seq = str(doc.get("seq") or "")
        if seq.isdigit() and (not checkpoint or int(seq) > int(checkpoint)):
            return seq.encode()
        return checkpoint

    async def _finish_if_done(self, shard: Shard) -> None:
        """A closed shard read to its end whose records are all handled (and whose
        window had its final invocation): mark it ``SHARD_END`` so its children start
        (here or on another replica)."""
        if not shard.ended or shard.acked != shard.fetched or shard.revoked:
            return
        if shard.held or (shard.gate is not None and shard.gate.open):
            self._wake.set()  # the window's final invocation is due
            return
        assert self.state is not None
        await self.state.set(f"ckpt:{shard.info.id}", SHARD_END)
        self._finished.add(shard.info.id)
        log.info("stream.shard_finished", trigger=self.spec.name, shard=shard.info.id)
        self._tick_now.set()

    # -- polling -----------------------------------------------------------------------

    def _readable(self) -> list[Shard]:
        assert self._leases is not None
        return [
            s
            for s in self._owned.values()
            if s.iterator is not None and not s.ended and not s.busy
            if self._leases.holds(s.info.id)
        ]

    async def poll(self, max_records: int) -> Sequence[Record]:
        """Records read ahead, else GetRecords on every held shard that is due (with
        nothing read ahead); waits up to a second for one."""
        if self.api is None:
            raise SourceUnavailable(f"{self.spec.name}: poll() outside 'async with'")
        deadline = anyio.current_time() + POLL_WAIT_S
        while True:
            out = self._release(max_records)
            if out:
                return out
            now = anyio.current_time()
            readable = [s for s in self._readable() if not s.held]
            due = [s for s in readable if s.next_at <= now]
            if due:
                errors: list[Exception] = []
                async with anyio.create_task_group() as tg:
                    for shard in due:
                        tg.start_soon(self._fetch, shard, errors)
                if errors and not any(s.held for s in due):
                    raise errors[0]
                continue
            if now >= deadline:
                return []
            until = min([s.next_at for s in readable] + [deadline])
            self._wake = anyio.Event()
            with anyio.move_on_after(max(0.0, until - now)):
                await self._wake.wait()

    def _release(self, limit: int) -> list[Record]:
        """Up to ``limit`` read-ahead records, shard after shard (each shard's in order)."""
        out: list[Record] = []
        for shard in list(self._owned.values()):
            if len(out) >= limit:
                break
            if shard.gate is None:
                take = min(limit - len(out), len(shard.held))
                out += [shard.held.popleft() for _ in range(take)]
                continue
            caught_up = shard.ended or (
                shard.gate.open
                and shard.behind_ms == 0
                and shard.gate.current is not None
                and shard.read_at >= shard.gate.current[1]
            )
            window = shard.gate.current
            released = shard.gate.release(
                shard.held,
                limit - len(out),
                acked=shard.acked,
                caught_up_past_end=caught_up,
                token=shard,
            )
            if released and is_final(released[-1]):
                why = "later_record" if shard.held else "caught_up"
                if shard.gate.early or shard.ended:
                    why = "state_over_1mb" if shard.gate.early else "shard_ended"
                log.debug(
                    "stream.window_closed",
                    trigger=self.spec.name,
                    shard=shard.info.id,
                    window=window,
                    reason=why,
                    read_at=shard.read_at,
                    behind_ms=shard.behind_ms,
                )
            out += released
        return out

    async def _fetch(self, shard: Shard, errors: list[Exception]) -> None:
        assert self.api is not None
        assert shard.iterator is not None
        shard.busy = True
        shard.calls.append(anyio.current_time())
        try:
            answer = await self.api.get_records(shard.iterator, READ_LIMIT)
        except Exception as exc:
            await self._fetch_failed(shard, exc, errors)
            return
        finally:
            shard.busy = False
        if shard.revoked:
            return
        now = anyio.current_time()
        raw = answer.get("Records", [])
        shard.throttles = 0
        shard.read_at = time.time()
        shard.behind_ms = float(answer.get("MillisBehindLatest", 0) or 0)
        records = self.api.records(raw, shard.info.id, shard)
        if records:
            shard.fetched = records[-1].item_id
            shard.held.extend(records)
        shard.iterator = answer.get("NextShardIterator")
        if shard.iterator is None or (shard.info.closed and not raw):
            shard.ended = True
            await self._finish_if_done(shard)
        behind = bool(raw) and (shard.behind_ms > 0 or len(raw) >= READ_LIMIT)
        if not behind:
            shard.next_at = now + self.poll_interval_s
        elif len(shard.calls) < READS_PER_S:
            shard.next_at = now
        else:  # at once, but within Kinesis's five reads a second per shard
            shard.next_at = max(now, shard.calls[0] + 1.0)

    async def _fetch_failed(self, shard: Shard, exc: Exception, errors: list[Exception]) -> None:
        assert self.api is not None
        kind = client_util.classify(exc)
        sid = shard.info.id
        now = anyio.current_time()
        if kind == "throttled":
            shard.throttles += 1
            delay = min(THROTTLE_CAP_S, 0.5 * 2 ** (shard.throttles - 1)) * random.uniform(0.8, 1.2)
            shard.next_at = now + delay
            log.info("stream.throttled", trigger=self.spec.name, shard=sid, retry_in_s=delay)
            return
        if kind in ("expired", "trimmed"):
            # expired: read on after the last record read; trimmed: that is gone
            after = shard.fetched if kind == "expired" else None
            try:
                if after:
                    shard.iterator = await self.api.iterator(
                        sid, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after
                    )
                else:
                    shard.iterator = await self.api.iterator(sid, "TRIM_HORIZON")
            except Exception as again:
                errors.append(self._translate(again, f"GetShardIterator({sid})"))
                shard.next_at = now + self.poll_interval_s
                return
            log.warning("stream.iterator_renewed", trigger=self.spec.name, shard=sid, reason=kind)
            return
        shard.next_at = now + self.poll_interval_s
        errors.append(self._translate(exc, f"GetRecords({sid})"))

    # -- settling ----------------------------------------------------------------------

    async def ack(self, records: Sequence[Record]) -> None:
        """Checkpoint each shard at the last of its records here (a handled prefix)."""
        assert self.state is not None
        last: dict[int, Record] = {}
        for record in records:
            last[id(record.token)] = record
        for record in last.values():
            shard = record.token
            if not isinstance(shard, Shard) or shard.revoked:
                continue  # no longer ours: whoever holds it now reads on from its checkpoint
            try:
                await self.state.set(f"ckpt:{shard.info.id}", str(record.item_id).encode())
                shard.acked = str(record.item_id)
                if shard.gate is not None:
                    if is_final(record) and shard.gate.final_out:
                        # closed here unless on_result did (a success): by now a poll may
                        # have opened the next window, which must stay open
                        shard.gate.close()
                    self._wake.set()  # the next window, or this one's final invocation
                await self._finish_if_done(shard)
            except StoreError as exc:
                raise SourceUnavailable(
                    f"{self.spec.name}: checkpoint of {shard.info.id} failed: {exc}"
                ) from exc

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        """Nothing to do: unacknowledged records are read again from the checkpoint."""

    # -- shapes and gauges -------------------------------------------------------------

    async def on_result(self, records: Sequence[Record], payload: bytes) -> None:
        """A batch succeeded (these records, the handler's JSON result): with tumbling
        windows, keep the ``state`` it returned, saved with the window's position (a
        final invocation drops it). Called by the dispatcher before ``ack``."""
        shard = records[0].token if records else None
        if not isinstance(shard, Shard) or shard.gate is None or shard.revoked:
            return
        assert self.state is not None
        gate = shard.gate
        if is_final(records[-1]):
            gate.close()
        else:
            try:
                result = json.loads(payload) if payload else None
            except ValueError:
                result = None
            state = result.get("state") if isinstance(result, dict) else None
            gate.keep(state if state is not None else {})
        doc = json.dumps(gate.saved(str(records[-1].item_id))).encode()
        for attempt in range(1, 6):
            try:
                await self.state.set(f"window:{shard.info.id}", doc)
                return
            except StoreError as exc:
                log.warning("stream.window_save_failed", shard=shard.info.id, error=str(exc))
                await anyio.sleep(0.2 * attempt)

    def batch_event(self, records: Sequence[Record]) -> dict[str, JSON]:
        """Lambda's stream event: ``{"Records": [...]}`` (records of one shard); with
        tumbling windows also the window, its state and ``isFinalInvokeForWindow``."""
        shard = records[0].token if records else None
        if isinstance(shard, Shard) and shard.gate is not None:
            assert self.api is not None
            return shard.gate.envelope(list(records), shard.info.id, self.api.arn)
        return {"Records": [r.event for r in records]}

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        assert self.api is not None
        return self.api.batch_info(records)

    def statistics(self) -> Mapping[str, float]:
        """``iterator_age_s.SHARD`` (MillisBehindLatest of the last read, in seconds),
        ``millis_behind_latest`` (the largest), ``shards_held``, ``replicas``,
        ``shards_finished``."""
        stats: dict[str, float] = {}
        behind = 0.0
        for sid, shard in list(self._owned.items()):
            stats[f"iterator_age_s.{sid}"] = shard.behind_ms / 1000
            behind = max(behind, shard.behind_ms)
        stats["millis_behind_latest"] = behind
        stats["shards_held"] = float(len(self._owned))
        stats["shards_finished"] = float(len(self._finished))
        stats["replicas"] = float(self._leases.members if self._leases else 0)
        return stats
