"""The cron source: event shape, catch-up, once-per-tick claims, overlap, real-clock firing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from eventrun.abc import Clock, InvokeOutcome, PushSource, Route, SourceSpec
from eventrun.exceptions import ConfigError, FunctionSaturated, QueueFull, StoreError
from eventrun.runtime._clock import SystemClock
from eventrun.sources.cron._source import CURSOR_KEY, create
from eventrun.testing._clock import FakeClock

START = 1_700_000_000  # FakeClock's wall start: 2023-11-14T22:13:20Z
MINUTE_TICK = 1_700_000_040  # the next whole minute: 22:14:00Z


class DictState:
    """KeyValueState in a dict; claims expire on the context's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[str, bytes] = {}
        self.claims: dict[str, float] = {}
        self.claim_ttls: list[float] = []

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.data[key] = value

    async def claim(self, key: str, ttl_s: float) -> bool:
        self.claim_ttls.append(ttl_s)
        now = self.clock.time()
        if self.claims.get(key, 0.0) > now:
            return False
        self.claims[key] = now + ttl_s
        return True

    async def release(self, key: str) -> None:
        self.claims.pop(key, None)


@dataclass
class RecordingContext:
    """A SourceContext that records invocations; synchronous ones block until released."""

    spec: SourceSpec
    clock: Clock
    state: DictState
    async_events: list[Any] = field(default_factory=list)
    async_at: list[float] = field(default_factory=list)
    sync_events: list[Any] = field(default_factory=list)
    gates: list[anyio.Event] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def invoke(self, event: Any, *, log_tail: bool = False) -> InvokeOutcome:
        gate = anyio.Event()
        self.sync_events.append(event)
        self.gates.append(gate)
        self._notify()
        await gate.wait()
        return InvokeOutcome(request_id=str(uuid.uuid4()), ok=True, payload=b"null")

    async def invoke_async(self, event: Any) -> str:
        self.async_at.append(self.clock.time())
        self.async_events.append(event)
        self._notify()
        return str(uuid.uuid4())

    def add_route(self, route: Route) -> None:
        raise AssertionError("the cron source mounts no routes")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, what: str, n: int) -> None:
        with anyio.fail_after(5):
            while len(getattr(self, what)) < n:
                await self._changed.wait()


def make_spec(
    schedule: str, *, function: str = "nightly", index: int = 0, **keys: Any
) -> SourceSpec:
    config = SimpleNamespace(
        schedule=schedule,
        timezone=keys.pop("timezone", "UTC"),
        input=keys.pop("input", None),
        catch_up=keys.pop("catch_up", 1),
        overlap=keys.pop("overlap", "allow"),
        **keys,
    )
    return SourceSpec(
        kind="cron", name=f"{function}/cron[{index}]", function=function, config=config
    )


@asynccontextmanager
async def serving(
    schedule: str, *, clock: Clock | None = None, state: dict[str, bytes] | None = None, **keys: Any
) -> AsyncIterator[RecordingContext]:
    clock = clock or FakeClock(START)
    spec = make_spec(schedule, **keys)
    ctx = RecordingContext(spec, clock, DictState(clock))
    ctx.state.data.update(state or {})
    source = create(spec)
    async with anyio.create_task_group() as tg:
        await tg.start(source.serve, ctx)
        yield ctx
        tg.cancel_scope.cancel()


def test_create_returns_a_push_source() -> None:
    assert isinstance(create(make_spec("rate(1 minute)")), PushSource)


async def test_event_is_an_eventbridge_scheduled_event() -> None:
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock, region="eu-west-1", index=2) as ctx:
        await clock.advance(40)
        await clock.advance(60)
    assert len(ctx.async_events) == 2
    first, second = ctx.async_events
    # reference §3.7: exactly these keys
    assert set(first) == {
        "version",
        "account",
        "region",
        "detail",
        "detail-type",
        "source",
        "time",
        "id",
        "resources",
    }
    assert first["version"] == "0"
    assert first["account"] == "000000000000"
    assert first["region"] == "eu-west-1"
    assert first["detail"] == {}
    assert first["detail-type"] == "Scheduled Event"
    assert first["source"] == "aws.events"
    assert first["time"] == "2023-11-14T22:14:00Z"
    assert second["time"] == "2023-11-14T22:15:00Z"
    assert str(uuid.UUID(first["id"])) == first["id"]
    assert first["id"] != second["id"]
    assert first["resources"] == ["arn:aws:events:eu-west-1:000000000000:rule/nightly-2"]
    # fired at the scheduled time, not before
    assert ctx.async_at == [MINUTE_TICK, MINUTE_TICK + 60]


async def test_region_and_account_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock, account="123456789012") as ctx:
        await clock.advance(40)
    (event,) = ctx.async_events
    assert event["region"] == "ap-south-1"
    assert event["account"] == "123456789012"
    assert event["resources"] == ["arn:aws:events:ap-south-1:123456789012:rule/nightly-0"]


async def test_input_replaces_the_event() -> None:
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock, input={"job": "cleanup", "n": [1, 2]}) as ctx:
        await clock.advance(40)
    assert ctx.async_events == [{"job": "cleanup", "n": [1, 2]}]


async def test_fresh_trigger_fires_nothing_for_the_past() -> None:
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock, catch_up=5) as ctx:
        assert ctx.async_events == []
        assert ctx.state.data[CURSOR_KEY] == str(START).encode()
        await clock.advance(39)
        assert ctx.async_events == []
        await clock.advance(1)
        assert len(ctx.async_events) == 1
        assert ctx.state.data[CURSOR_KEY] == str(MINUTE_TICK).encode()


async def test_catch_up_fires_the_latest_missed_ticks_with_their_own_times() -> None:
    last_fired = MINUTE_TICK - 11 * 60  # ten ticks were missed: 22:04 .. 22:13
    clock = FakeClock(START)
    state = {CURSOR_KEY: str(last_fired).encode()}
    async with serving("rate(1 minute)", clock=clock, state=state, catch_up=3) as ctx:
        times = [e["time"] for e in ctx.async_events]
        assert times == ["2023-11-14T22:11:00Z", "2023-11-14T22:12:00Z", "2023-11-14T22:13:00Z"]
        assert ctx.state.data[CURSOR_KEY] == str(START).encode()
        await clock.advance(40)
        assert ctx.async_events[-1]["time"] == "2023-11-14T22:14:00Z"
    assert len(ctx.async_events) == 4


async def test_catch_up_zero_drops_missed_ticks() -> None:
    state = {CURSOR_KEY: str(MINUTE_TICK - 11 * 60).encode()}
    async with serving("rate(1 minute)", state=state, catch_up=0) as ctx:
        assert ctx.async_events == []
        assert ctx.state.data[CURSOR_KEY] == str(START).encode()


async def test_catch_up_fires_a_missed_one_time_schedule() -> None:
    # at() was due 22:13:00Z while the daemon was down since 22:00
    state = {CURSOR_KEY: str(START - 800).encode()}
    async with serving("at(2023-11-14T22:13:00)", state=state) as ctx:
        assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:13:00Z"]


async def test_lost_claim_does_not_fire() -> None:
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock) as ctx:
        # another replica claimed 22:14:00 first
        assert await ctx.state.claim(f"tick:{MINUTE_TICK}", ttl_s=120)
        await clock.advance(40)
        assert ctx.async_events == []
        assert ctx.state.data[CURSOR_KEY] == str(MINUTE_TICK).encode()
        await clock.advance(60)
    assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:15:00Z"]
    assert ctx.state.claim_ttls[-1] == 120  # max(60, 2 * period)


async def test_two_replicas_fire_each_tick_once() -> None:
    clock = FakeClock(START)
    shared = DictState(clock)
    contexts = []
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            spec = make_spec("rate(10 seconds)")
            ctx = RecordingContext(spec, clock, shared)
            await tg.start(create(spec).serve, ctx)
            contexts.append(ctx)
        for _ in range(5):
            await clock.advance(10)
        tg.cancel_scope.cancel()
    times = sorted(e["time"] for c in contexts for e in c.async_events)
    assert len(times) == 5
    assert len(set(times)) == 5


async def test_shutdown_between_claim_and_fire_still_fires_the_claimed_tick() -> None:
    """The other replicas will never fire a tick this one claimed, so a stop that lands
    in the moment between claim and fire queues the tick instead of losing it."""
    clock = FakeClock(START)
    state = DictState(clock)
    spec = make_spec("rate(1 minute)")
    ctx = RecordingContext(spec, clock, state)
    async with anyio.create_task_group() as tg:
        await tg.start(create(spec).serve, ctx)
        # up to just after the claim, 0.25 s before 22:14:00
        await clock.advance(MINUTE_TICK - clock.time() - 0.2)
        assert f"tick:{MINUTE_TICK}" in state.claims  # claimed: no other replica fires it
        assert ctx.async_events == []
        tg.cancel_scope.cancel()
    assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:14:00Z"]
    assert state.data[CURSOR_KEY] == str(MINUTE_TICK).encode()


async def test_one_time_schedule_fires_once() -> None:
    clock = FakeClock(START)
    async with serving("at(2023-11-14T22:15:00)", clock=clock) as ctx:
        await clock.advance(3600)
        assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:15:00Z"]


async def test_overlap_allow_queues_every_tick_asynchronously() -> None:
    clock = FakeClock(START)
    async with serving("rate(10 seconds)", clock=clock, overlap="allow") as ctx:
        for _ in range(3):
            await clock.advance(10)
    assert len(ctx.async_events) == 3
    assert ctx.sync_events == []


async def test_overlap_skip_skips_ticks_while_a_run_is_going() -> None:
    clock = FakeClock(START)
    async with serving("rate(10 seconds)", clock=clock, overlap="skip") as ctx:
        await clock.advance(10)  # tick 1 starts and keeps running
        await ctx.wait_for("sync_events", 1)
        await clock.advance(10)  # tick 2: skipped
        assert len(ctx.sync_events) == 1
        ctx.gates[0].set()
        await clock.advance(10)  # tick 3 runs
        await ctx.wait_for("sync_events", 2)
        ctx.gates[1].set()
    assert [e["time"] for e in ctx.sync_events] == ["2023-11-14T22:13:30Z", "2023-11-14T22:13:50Z"]
    assert ctx.async_events == []


async def test_overlap_queue_runs_ticks_one_after_another_with_one_waiting() -> None:
    clock = FakeClock(START)
    async with serving("rate(10 seconds)", clock=clock, overlap="queue") as ctx:
        await clock.advance(10)  # tick 1 runs
        await ctx.wait_for("sync_events", 1)
        await clock.advance(10)  # tick 2 waits
        await clock.advance(10)  # tick 3: the queue is full, skipped
        assert len(ctx.sync_events) == 1
        ctx.gates[0].set()  # tick 2 starts as soon as tick 1 ends
        await ctx.wait_for("sync_events", 2)
        ctx.gates[1].set()
        await clock.advance(10)  # tick 4 runs
        await ctx.wait_for("sync_events", 3)
        ctx.gates[2].set()
    times = [e["time"] for e in ctx.sync_events]
    assert times == ["2023-11-14T22:13:30Z", "2023-11-14T22:13:40Z", "2023-11-14T22:14:00Z"]


async def test_long_waits_wake_on_time() -> None:
    clock = FakeClock(START)
    async with serving("cron(0 9 * * ? *)", clock=clock, timezone="Europe/Berlin") as ctx:
        await clock.advance(2 * 86400)
    assert [e["time"] for e in ctx.async_events] == ["2023-11-15T08:00:00Z", "2023-11-16T08:00:00Z"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"schedule": "rate(1 minutes)"},
            "functions.nightly.triggers[3].cron.schedule: rate(1 minutes): use",
        ),
        (
            {"schedule": "cron(0 0 * * * *)"},
            "functions.nightly.triggers[3].cron.schedule: cron(0 0 * * * *): exactly one",
        ),
        (
            {"timezone": "Mars/Olympus"},
            "functions.nightly.triggers[3].cron.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            {"overlap": "never"},
            "functions.nightly.triggers[3].cron.overlap: must be allow, skip or queue, got 'never'",
        ),
        (
            {"catch_up": -1},
            "functions.nightly.triggers[3].cron.catch_up: must be an integer >= 0, got -1",
        ),
    ],
)
def test_create_validates_and_names_the_key(keys: dict[str, Any], message: str) -> None:
    schedule = keys.pop("schedule", "rate(1 minute)")
    with pytest.raises(ConfigError) as info:
        create(make_spec(schedule, index=3, **keys))
    assert str(info.value).startswith(message)


async def test_fires_on_whole_seconds_against_the_real_clock() -> None:
    async with serving("* * * * * *", clock=SystemClock()) as ctx:
        await ctx.wait_for("async_events", 3)
    for event, fired_at in zip(ctx.async_events, ctx.async_at, strict=True):
        scheduled = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        assert scheduled == int(scheduled)
        # never early; late by the loop's wake-up latency only (half a tick: a busy machine)
        assert -0.001 <= fired_at - scheduled < 0.5, (event["time"], fired_at)


class FailingClaimState(DictState):
    """The store is down for one tick's claim."""

    def __init__(self, clock: Clock, failing_key: str) -> None:
        super().__init__(clock)
        self.failing_key = failing_key

    async def claim(self, key: str, ttl_s: float) -> bool:
        if key == self.failing_key:
            raise StoreError(f"store unreachable while claiming {key}")
        return await super().claim(key, ttl_s)


async def test_store_failure_skips_the_tick_and_keeps_going() -> None:
    clock = FakeClock(START)
    spec = make_spec("rate(1 minute)")
    ctx = RecordingContext(spec, clock, FailingClaimState(clock, f"tick:{MINUTE_TICK}"))
    async with anyio.create_task_group() as tg:
        await tg.start(create(spec).serve, ctx)
        await clock.advance(40)
        assert ctx.async_events == []
        assert ctx.state.data[CURSOR_KEY] == str(START).encode()  # left for catch-up
        await clock.advance(60)
        tg.cancel_scope.cancel()
    assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:15:00Z"]


async def test_an_unreadable_cursor_is_logged_and_treated_as_a_fresh_start() -> None:
    clock = FakeClock(START)
    with capture_logs() as logs:
        async with serving("rate(1 minute)", clock=clock, state={CURSOR_KEY: b"yesterday"}) as ctx:
            assert ctx.async_events == []  # nothing "missed" is invented
            assert ctx.state.data[CURSOR_KEY] == str(START).encode()
            await clock.advance(40)
    assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:14:00Z"]
    (warning,) = [e for e in logs if e["event"] == "cron.cursor_invalid"]
    assert warning["value"] == "b'yesterday'"


class FailingSetState(DictState):
    """The store refuses every cursor write."""

    async def set(self, key: str, value: bytes) -> None:
        raise StoreError("store unreachable while saving the cursor")


async def test_a_cursor_that_cannot_be_saved_is_logged_and_ticks_still_fire() -> None:
    clock = FakeClock(START)
    spec = make_spec("rate(1 minute)")
    ctx = RecordingContext(spec, clock, FailingSetState(clock))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(create(spec).serve, ctx)
            await clock.advance(40)
            await clock.advance(60)
            tg.cancel_scope.cancel()
    assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:14:00Z", "2023-11-14T22:15:00Z"]
    failed = [e for e in logs if e["event"] == "cron.cursor_save_failed"]
    assert len(failed) == 3  # at start, then after each tick
    assert "saving the cursor" in failed[0]["error"]


@dataclass
class RefusingContext(RecordingContext):
    """The async queue refuses the first ``refuse`` events (full); every synchronous
    invocation fails: the first by an exception, the rest by a handler error."""

    refuse: int = 1
    sync_calls: int = 0

    async def invoke_async(self, event: Any) -> str:
        if self.refuse:
            self.refuse -= 1
            raise QueueFull("async:nightly", "depth", 10)
        return await super().invoke_async(event)

    async def invoke(self, event: Any, *, log_tail: bool = False) -> InvokeOutcome:
        self.sync_calls += 1
        self.sync_events.append(event)
        self._notify()
        if self.sync_calls == 1:
            raise FunctionSaturated("nightly: every slot is busy")
        return InvokeOutcome(request_id="r-2", ok=False, payload=b"{}", function_error="Unhandled")


async def test_a_tick_the_queue_refuses_is_logged_and_the_next_one_fires() -> None:
    clock = FakeClock(START)
    spec = make_spec("rate(1 minute)")
    ctx = RefusingContext(spec, clock, DictState(clock))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(create(spec).serve, ctx)
            await clock.advance(40)
            await clock.advance(60)
            tg.cancel_scope.cancel()
    assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:15:00Z"]
    (failed,) = [e for e in logs if e["event"] == "cron.fire_failed"]
    assert failed["scheduled_at"] == "2023-11-14T22:14:00Z"
    assert failed["error"] == str(QueueFull("async:nightly", "depth", 10))


async def test_serial_invocations_that_fail_are_logged_and_the_next_tick_runs() -> None:
    clock = FakeClock(START)
    spec = make_spec("rate(10 seconds)", overlap="skip")
    ctx = RefusingContext(spec, clock, DictState(clock))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(create(spec).serve, ctx)
            await clock.advance(10)
            await ctx.wait_for("sync_events", 1)
            await clock.advance(10)
            await ctx.wait_for("sync_events", 2)
            tg.cancel_scope.cancel()
    failed = [e for e in logs if e["event"] == "cron.invoke_failed"]
    assert [f["scheduled_at"] for f in failed] == ["2023-11-14T22:13:30Z", "2023-11-14T22:13:40Z"]
    assert failed[0]["error"] == "nightly: every slot is busy"
    assert (failed[1]["request_id"], failed[1]["function_error"]) == ("r-2", "Unhandled")
    fired = [e for e in logs if e["event"] == "cron.fired"]
    assert [f.get("request_id") for f in fired] == ["r-2"]  # the one that ran at all


async def test_wall_clock_jumping_forward_an_hour_fires_only_catch_up_ticks() -> None:
    """NTP or an operator steps the clock an hour ahead: the 60 ticks it skipped are missed
    ticks, the latest ``catch_up`` of them fire, not one fire per skipped tick."""
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock, catch_up=2) as ctx:
        await clock.advance(40)
        assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:14:00Z"]
        clock.jump_wall(3600)
        # the source wakes for 22:15's claim (0.25 s early), finds the wall clock at
        # 23:14:59.8, and catches up instead of firing 22:15 .. 23:14 one by one
        await clock.advance(59.8)
        times = [e["time"] for e in ctx.async_events]
        assert times == [
            "2023-11-14T22:14:00Z",
            "2023-11-14T23:13:00Z",
            "2023-11-14T23:14:00Z",
        ], times
        await clock.advance(60)
        assert ctx.async_events[-1]["time"] == "2023-11-14T23:15:00Z"
        assert len(ctx.async_events) == 4


async def test_wall_clock_jumping_back_an_hour_fires_no_tick_twice() -> None:
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock) as ctx:
        await clock.advance(40 + 60)  # 22:14 and 22:15 fired
        clock.jump_wall(-3600)
        await clock.advance(30 * 60)  # wall time is 21:45 after this: nothing is due again
        assert [e["time"] for e in ctx.async_events] == [
            "2023-11-14T22:14:00Z",
            "2023-11-14T22:15:00Z",
        ]
        await clock.advance(31 * 60)  # wall time reaches 22:16 again
        times = [e["time"] for e in ctx.async_events]
    assert times[-1] == "2023-11-14T22:16:00Z"
    assert len(times) == len(set(times)) == 3


async def test_monotonic_timers_ignore_wall_clock_jumps() -> None:
    """A jump changes when wall-time ticks are due, never the monotonic sleeps behind
    them: an hour ahead then back again leaves the schedule where it was."""
    clock = FakeClock(START)
    async with serving("rate(1 minute)", clock=clock, catch_up=0) as ctx:
        clock.jump_wall(3600)
        clock.jump_wall(-3600)
        await clock.advance(40)
    assert [e["time"] for e in ctx.async_events] == ["2023-11-14T22:14:00Z"]
