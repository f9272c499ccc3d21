"""The cron source: fires a function on a schedule (``rate``, ``cron``, ``at``, crontab).

Trigger keys (``spec.config``): ``schedule`` (see :mod:`eventrun.sources.cron._schedule` for the
grammar, time-zone and DST rules), ``timezone`` (IANA, default UTC), ``input`` (a JSON
value that replaces the event, like EventBridge's constant input), ``catch_up`` (default
1) and ``overlap`` (``allow`` | ``skip`` | ``queue``, default ``allow``); optional
``account`` / ``region`` for the event envelope. :func:`create` validates everything and
raises ConfigError, so ``eventrun check`` catches bad schedules.

Each tick T delivers EventBridge's "Scheduled Event" (reference §3.7) with ``time`` = T
(the scheduled time, not the moment of firing) and ``resources`` = the rule ARN
``arn:aws:events:REGION:ACCOUNT:rule/FUNCTION-INDEX``.

Firing. The source sleeps on ``ctx.clock`` until shortly before T, claims the tick
(``ctx.state.claim("tick:T")``, so among replicas sharing a store exactly one fires it),
sleeps to T re-checking wall time, and invokes with the event already built, keeping
fire-time jitter to the event loop's timer resolution.

State. ``ctx.state`` key ``last_tick`` is a cursor: every tick at or before it was fired
or predates the trigger. A fresh trigger sets it to now (nothing in the past fires). On
start, the latest ``catch_up`` ticks after the cursor that were missed fire at once, each
with its own scheduled time; older missed ticks are dropped (``cron.ticks_dropped``).
Keys (``last_tick``, ``tick:T``) assume ``ctx.state`` is private to this trigger, shared
by its replicas. A failed claim (store down) does not fire and leaves the cursor, so the
tick is caught up on the next start.

Overlap. ``invoke_async`` only queues, so the source cannot see a run finish through it:

* ``allow``: ``ctx.invoke_async(event)``: durable, retried by the runtime per the
  function's ``maximum_retry_attempts``, runs may overlap.
* ``skip``: ``ctx.invoke(event)`` (synchronous) in a task of the source's task group; a
  tick that comes while the previous run is going is skipped (``cron.tick_skipped``).
* ``queue``: synchronous too; ticks run one after another, at most one waiting; a tick
  arriving while one already waits is skipped.

Synchronous runs get no async retries or destinations; a failure is logged
(``cron.invoke_failed``) and the schedule goes on.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from eventrun.abc import JSON, PushSource, SourceContext, SourceSpec
from eventrun.exceptions import ConfigError, EventrunError
from eventrun.sources.cron._schedule import (
    Schedule,
    ScheduleError,
    parse_schedule,
    recent_ticks,
    resolve_timezone,
)

__all__ = ["CronSource", "create"]

log = structlog.get_logger("eventrun.sources.cron")

Overlap = Literal["allow", "skip", "queue"]
CURSOR_KEY = "last_tick"
CLAIM_LEAD_S = 0.25
"""Wake this long before a tick to claim it, so the store round trip is not jitter."""
MAX_SLEEP_S = 5.0
"""Re-read wall time at least this often while waiting, so a wall clock stepped forward
(NTP, an operator, a resumed VM) is noticed within this long; a wake-up costs nothing."""
JUMP_S = 5.0
"""A tick found this late after its wait means the wall clock jumped forward (or the loop
stalled), not a slow timer: the ticks it skipped are missed ticks, caught up as at a start."""
EARLY_S = 1e-4


def create(spec: SourceSpec) -> PushSource:
    """Validate the trigger and build its source; raise ConfigError naming the key."""
    cfg = spec.config
    index = re.search(r"\[(\d+)\]$", spec.name)
    path = f"functions.{spec.function}.triggers[{index[1] if index else 0}].cron"
    schedule_text = str(getattr(cfg, "schedule", ""))
    try:
        tz = resolve_timezone(str(getattr(cfg, "timezone", None) or "UTC"))
    except ScheduleError as exc:
        raise ConfigError(f"{path}.timezone: {exc}") from None
    try:
        schedule = parse_schedule(schedule_text, tz)
    except ScheduleError as exc:
        raise ConfigError(f"{path}.schedule: {exc}") from None
    overlap: Overlap = getattr(cfg, "overlap", None) or "allow"
    if overlap not in ("allow", "skip", "queue"):
        raise ConfigError(f"{path}.overlap: must be allow, skip or queue, got {overlap!r}")
    catch_up = getattr(cfg, "catch_up", 1)
    if not isinstance(catch_up, int) or catch_up < 0:
        raise ConfigError(f"{path}.catch_up: must be an integer >= 0, got {catch_up!r}")
    region = (
        getattr(cfg, "region", None)
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    account = getattr(cfg, "account", None) or "000000000000"
    rule = f"{spec.function}-{index[1] if index else 0}"
    return CronSource(
        spec,
        schedule,
        overlap=overlap,
        catch_up=catch_up,
        input=getattr(cfg, "input", None),
        region=str(region),
        account=str(account),
        rule_arn=f"arn:aws:events:{region}:{account}:rule/{rule}",
    )


class CronSource:
    """A :class:`~eventrun.abc.PushSource` firing one schedule (see the module docstring)."""

    def __init__(
        self,
        spec: SourceSpec,
        schedule: Schedule,
        *,
        overlap: Overlap = "allow",
        catch_up: int = 1,
        input: JSON = None,
        region: str = "us-east-1",
        account: str = "000000000000",
        rule_arn: str = "",
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self.overlap = overlap
        self.catch_up = catch_up
        self.input = input
        self.region = region
        self.account = account
        self.rule_arn = rule_arn
        # A claim must outlive every moment a restarting replica could still catch the
        # tick up (the latest ``catch_up`` ticks), plus a minute of clock skew, or a tick
        # fired by a replica that died before saving the cursor could fire again.
        ticks = max(1, catch_up)
        self.claim_ttl_s = max(
            60.0, (ticks + 1) * schedule.period_s, ticks * schedule.period_s + 60.0
        )
        self._busy = False
        self._waiting: tuple[int, JSON] | None = None

    def event(self, tick: int) -> JSON:
        """What tick ``tick`` delivers: the constant input, or the Scheduled Event."""
        if self.input is not None:
            return self.input
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account,
            "time": _iso(tick),
            "region": self.region,
            "resources": [self.rule_arn],
            "detail": {},
        }

    async def serve(
        self, ctx: SourceContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            cursor = await self._start(ctx, tg)
            task_status.started()
            while (tick := self.schedule.next_after(cursor)) is not None:
                if (back := cursor - ctx.clock.time()) > JUMP_S:
                    self._log_moved_back(back, tick)
                await self._sleep_until_wall(ctx, tick - CLAIM_LEAD_S)
                if ctx.clock.time() - tick > JUMP_S:
                    # the wall clock jumped forward past ticks (or the loop stalled): the
                    # ticks it skipped are missed ticks, caught up as at a start, never a
                    # storm of one fire per skipped tick
                    cursor = await self._catch_up(ctx, tg, cursor, ctx.clock.time())
                    continue
                won = await self._claim(ctx, tick)
                event = self.event(tick) if won else None
                try:
                    await self._sleep_until_wall(ctx, tick)
                except anyio.get_cancelled_exc_class():
                    if event is not None and self.overlap == "allow":
                        # shutting down between claiming and firing: the other replicas
                        # will not fire a tick we claimed, so queue it now (a fraction of
                        # a second early) rather than lose it
                        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                            await self._dispatch(ctx, tg, tick, event)
                            await self._save_cursor(ctx, tick)
                    raise
                if event is not None:
                    await self._dispatch(ctx, tg, tick, event)
                elif won is False:
                    log.debug("cron.tick_claimed_elsewhere", function=self.spec.function, tick=tick)
                if won is not None:  # a store failure leaves the tick to catch-up
                    await self._save_cursor(ctx, tick)
                cursor = tick
            log.info(
                "cron.schedule_exhausted",
                function=self.spec.function,
                schedule=self.schedule.expression,
            )
            await anyio.sleep_forever()

    async def _start(self, ctx: SourceContext, tg: TaskGroup) -> float:
        """Read the cursor, fire the missed ticks catch-up allows; return the new cursor."""
        now = ctx.clock.time()
        raw = await ctx.state.get(CURSOR_KEY)
        try:
            cursor = float(raw) if raw is not None else None
        except ValueError:
            log.warning("cron.cursor_invalid", function=self.spec.function, value=repr(raw))
            cursor = None
        if cursor is not None and cursor < now:
            return await self._catch_up(ctx, tg, cursor, now)
        if cursor is None:
            cursor = float(int(now))
            await self._save_cursor(ctx, int(now))
        return cursor

    async def _catch_up(
        self, ctx: SourceContext, tg: TaskGroup, cursor: float, now: float
    ) -> float:
        """Fire the latest ``catch_up`` ticks after ``cursor`` up to ``now``, drop (and log)
        older ones, and move the cursor to ``now``; return it."""
        ticks = recent_ticks(self.schedule, cursor, now, self.catch_up)
        first_missed = self.schedule.next_after(cursor)
        if first_missed is not None and first_missed <= now and first_missed not in ticks:
            log.warning(
                "cron.ticks_dropped",
                function=self.spec.function,
                first_missed=_iso(first_missed),
                catch_up=self.catch_up,
            )
        for tick in ticks:
            if await self._claim(ctx, tick):
                await self._dispatch(ctx, tg, tick, self.event(tick))
        await self._save_cursor(ctx, int(now))
        return float(int(now))

    async def _claim(self, ctx: SourceContext, tick: int) -> bool | None:
        """True if this replica fires ``tick``; None when the store failed (not fired)."""
        try:
            return await ctx.state.claim(f"tick:{tick}", ttl_s=self.claim_ttl_s)
        except EventrunError as exc:
            log.error(
                "cron.claim_failed", function=self.spec.function, tick=_iso(tick), error=str(exc)
            )
            return None

    async def _save_cursor(self, ctx: SourceContext, tick: int) -> None:
        try:
            await ctx.state.set(CURSOR_KEY, str(tick).encode())
        except EventrunError as exc:
            log.warning("cron.cursor_save_failed", function=self.spec.function, error=str(exc))

    async def _sleep_until_wall(self, ctx: SourceContext, wall: float) -> None:
        """Sleep on the monotonic clock until wall time ``wall``, re-checking wall time.
        A wall clock set back (``remaining`` grew) only delays the tick: every tick up to
        the cursor already fired, none fires twice."""
        clock = ctx.clock
        expected: float | None = None
        while (remaining := wall - clock.time()) > EARLY_S:
            if expected is not None and remaining - expected > JUMP_S:
                self._log_moved_back(remaining - expected, wall)
            step = min(remaining, MAX_SLEEP_S)
            started = clock.monotonic()
            await clock.sleep_until(started + step)
            expected = remaining - (clock.monotonic() - started)

    def _log_moved_back(self, by_s: float, next_tick: float) -> None:
        log.warning(
            "cron.clock_moved_back",
            function=self.spec.function,
            by_s=round(by_s, 3),
            next_tick=_iso(int(next_tick)),
        )

    async def _dispatch(self, ctx: SourceContext, tg: TaskGroup, tick: int, event: JSON) -> None:
        if self.overlap == "allow":
            fired_at = ctx.clock.time()
            try:
                request_id = await ctx.invoke_async(event)
            except EventrunError as exc:
                log.error(
                    "cron.fire_failed",
                    function=self.spec.function,
                    scheduled_at=_iso(tick),
                    error=str(exc),
                )
                return
            self._log_fired(tick, fired_at, request_id=request_id)
        elif not self._busy:
            self._busy = True
            tg.start_soon(self._run_serial, ctx, tick, event)
        elif self.overlap == "queue" and self._waiting is None:
            self._waiting = (tick, event)
            log.info("cron.tick_queued", function=self.spec.function, scheduled_at=_iso(tick))
        else:
            reason = "queue_full" if self.overlap == "queue" else "previous_running"
            log.info(
                "cron.tick_skipped",
                function=self.spec.function,
                scheduled_at=_iso(tick),
                reason=reason,
            )

    async def _run_serial(self, ctx: SourceContext, tick: int, event: JSON) -> None:
        try:
            while True:
                fired_at = ctx.clock.time()
                try:
                    outcome = await ctx.invoke(event)
                except EventrunError as exc:
                    log.warning(
                        "cron.invoke_failed",
                        function=self.spec.function,
                        scheduled_at=_iso(tick),
                        error=str(exc),
                    )
                else:
                    self._log_fired(tick, fired_at, request_id=outcome.request_id)
                    if not outcome.ok:
                        log.warning(
                            "cron.invoke_failed",
                            function=self.spec.function,
                            scheduled_at=_iso(tick),
                            request_id=outcome.request_id,
                            function_error=outcome.function_error,
                        )
                if self._waiting is None:
                    return
                (tick, event), self._waiting = self._waiting, None
        finally:
            self._busy = False

    def _log_fired(self, tick: int, fired_at: float, **extra: Any) -> None:
        log.info(
            "cron.fired",
            function=self.spec.function,
            schedule=self.schedule.expression,
            scheduled_at=_iso(tick),
            lag_ms=round((fired_at - tick) * 1000, 3),
            **extra,
        )


def _iso(tick: int) -> str:
    return datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
