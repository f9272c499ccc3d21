"""The filewatch source against real files, the real watcher and a recording context."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
import structlog
from watchfiles._rust_notify import RustNotify, WatchfilesRustInternalError

from eventrun.abc import InvokeOutcome, PushSource, Route, SourceSpec
from eventrun.exceptions import ConfigError, QueueFull, SourceError
from eventrun.runtime._clock import SystemClock
from eventrun.sources import filewatch
from eventrun.sources.filewatch._cursor import BUCKETS, Cursor, Entry
from eventrun.sources.filewatch._events import encode_key, split_batches
from eventrun.sources.filewatch._scan import Stat

WAIT_S = 20.0


class MemoryState:
    """An in-memory KeyValueState."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.writes = 0

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.writes += 1
        self.data[key] = value

    async def claim(self, key: str, ttl_s: float) -> bool:
        if key in self.data:
            return False
        self.data[key] = b"1"
        return True

    async def release(self, key: str) -> None:
        self.data.pop(key, None)


class RecordingContext:
    """A SourceContext that records every asynchronous invocation."""

    def __init__(self, spec: SourceSpec, state: MemoryState) -> None:
        self.spec = spec
        self.clock = SystemClock()
        self.state = state
        self.events: list[dict[str, Any]] = []
        self.arrived_at: list[float] = []
        self._changed = anyio.Event()

    async def invoke(self, event: Any, *, log_tail: bool = False) -> InvokeOutcome:
        raise AssertionError("filewatch must invoke asynchronously")

    async def invoke_async(self, event: Any) -> str:
        self.events.append(event)
        self.arrived_at.append(time.monotonic())
        self._changed.set()
        self._changed = anyio.Event()
        return str(uuid.uuid4())

    def add_route(self, route: Route) -> None:
        raise AssertionError("filewatch mounts no routes")

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for e in self.events for r in e["Records"]]

    def names(self, name: str = "ObjectCreated:Put") -> list[str]:
        return [r["s3"]["object"]["key"] for r in self.records if r["eventName"] == name]

    async def wait_for(self, check: Callable[[], bool]) -> None:
        with anyio.fail_after(WAIT_S):
            while not check():
                await self._changed.wait()

    async def wait_key(self, key: str, count: int = 1) -> dict[str, Any]:
        await self.wait_for(lambda: self.names().count(key) >= count)
        return [r for r in self.records if r["s3"]["object"]["key"] == key][count - 1]

    async def barrier(self, root: Path) -> None:
        """Write a fresh file and wait for it: anything due before it has fired by then."""
        name = f"zz-barrier-{uuid.uuid4().hex[:8]}.txt"
        (root / name).write_text("barrier")
        await self.wait_key(name)


def make_spec(root: Path, **config: Any) -> SourceSpec:
    config.setdefault("settle", 0.2)
    cfg = SimpleNamespace(
        path=root.name,
        patterns=config.pop("patterns", ["*"]),
        ignore=config.pop("ignore", []),
        recursive=config.pop("recursive", True),
        events=config.pop("events", ["created"]),
        batch_size=config.pop("batch_size", 1),
        maximum_batching_window=config.pop("maximum_batching_window", 0.0),
        on_startup=config.pop("on_startup", "existing"),
        **config,
    )
    return SourceSpec(
        kind="filewatch", name="fn/filewatch[0]", function="fn", config=cfg, config_dir=root.parent
    )


class RefusingContext(RecordingContext):
    """A context whose queue is full for its first ``refusals`` invocations."""

    def __init__(self, spec: SourceSpec, state: MemoryState, refusals: int) -> None:
        super().__init__(spec, state)
        self.left = refusals
        self.refused: list[dict[str, Any]] = []
        self.refused_at: list[float] = []

    async def invoke_async(self, event: Any) -> str:
        if self.left:
            self.left -= 1
            self.refused.append(event)
            self.refused_at.append(time.monotonic())
            self._changed.set()
            self._changed = anyio.Event()
            raise QueueFull("async:fn", "depth", 1)
        return await super().invoke_async(event)


@asynccontextmanager
async def running(
    root: Path,
    state: MemoryState | None = None,
    source_kw: dict[str, Any] | None = None,
    refusals: int = 0,
    **config: Any,
) -> AsyncIterator[RecordingContext]:
    spec = make_spec(root, **config)
    source = filewatch.FileWatchSource(spec, **(source_kw or {}))
    assert isinstance(source, PushSource)
    ctx = (
        RefusingContext(spec, state or MemoryState(), refusals)
        if refusals
        else RecordingContext(spec, state or MemoryState())
    )
    async with anyio.create_task_group() as tg:
        await tg.start(source.serve, ctx)
        yield ctx
        tg.cancel_scope.cancel()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "uploads"
    d.mkdir()
    return d


async def test_slow_write_fires_once_after_completion(root: Path) -> None:
    chunks = [os.urandom(10_000) for _ in range(7)]
    async with running(root, settle=0.5) as ctx:
        with (root / "big.bin").open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                await anyio.sleep(0.25)  # deliberately slow: 1.75 s of writing
        done_at = time.monotonic()
        record = await ctx.wait_key("big.bin")
        await ctx.barrier(root)
    obj = record["s3"]["object"]
    assert obj["size"] == 70_000
    assert obj["eTag"] == hashlib.md5(b"".join(chunks)).hexdigest()
    assert ctx.names().count("big.bin") == 1
    assert ctx.arrived_at[0] >= done_at


async def test_rename_into_place_fires_once_for_final_name(root: Path) -> None:
    async with running(root, settle=0.3) as ctx:
        tmp = root / ".report.csv.tmp"
        with tmp.open("wb") as f:
            f.write(b"a,b\n")
            f.flush()
            await anyio.sleep(0.1)
            f.write(b"1,2\n")
        tmp.rename(root / "report.csv")
        record = await ctx.wait_key("report.csv")
        await ctx.barrier(root)
    assert record["s3"]["object"]["size"] == 8
    assert [k for k in ctx.names() if not k.startswith("zz-")] == ["report.csv"]


async def test_rename_is_complete_at_once_without_waiting_for_settle(root: Path) -> None:
    # settle (60 s) is far beyond the wait limit: only the rename fast path can deliver.
    async with running(root, settle=60.0) as ctx:
        tmp = root / ".quick.json.tmp"
        tmp.write_bytes(b"{}")
        tmp.rename(root / "quick.json")
        await ctx.wait_key("quick.json")


async def test_finished_file_moved_in_is_complete_at_once(root: Path) -> None:
    src = root.parent / "done.bin"
    src.write_bytes(b"finished long ago")
    os.utime(src, (time.time() - 120, time.time() - 120))
    async with running(root, settle=60.0) as ctx:
        src.rename(root / "done.bin")
        record = await ctx.wait_key("done.bin")
    assert record["s3"]["object"]["size"] == 17


async def test_a_full_queue_holds_the_batch_and_offers_it_again(root: Path) -> None:
    """The function's queue refuses (QueueFull, as when the store is down): the batch
    stays first in line and is delivered once the queue takes it; the watcher keeps
    running and nothing is lost or delivered twice."""
    with structlog.testing.capture_logs() as logs:
        async with running(root, refusals=2) as ctx:
            (root / "a.csv").write_text("1")
            await ctx.wait_key("a.csv")
            (root / "b.csv").write_text("2")
            await ctx.wait_key("b.csv")
    assert isinstance(ctx, RefusingContext)
    assert [e["Records"][0]["s3"]["object"]["key"] for e in ctx.refused] == ["a.csv"] * 2
    assert ctx.names() == ["a.csv", "b.csv"]
    failed = [e for e in logs if e["event"] == "filewatch.deliver_failed"]
    assert [e["retry_in_s"] for e in failed] == [0.5, 1.0]
    assert all(e["count"] == 1 and "async:fn" in e["error"] for e in failed)


async def test_batching_window_groups_records(root: Path) -> None:
    async with running(root, batch_size=10, maximum_batching_window=0.5) as ctx:
        for name in ("a.txt", "b.txt", "c.txt"):
            (root / name).write_text(name)
        await ctx.wait_for(lambda: len(ctx.records) >= 3)
    assert len(ctx.events) == 1
    assert sorted(ctx.names()) == ["a.txt", "b.txt", "c.txt"]


async def test_burst_of_1000_files_each_delivered_exactly_once(root: Path) -> None:
    names = [f"f{i:04d}.dat" for i in range(1000)]
    async with running(root, settle=0.2, batch_size=100, maximum_batching_window=1.0) as ctx:
        for name in names:
            (root / name).write_bytes(name.encode())
        await ctx.wait_for(lambda: len(set(ctx.names()) & set(names)) == 1000)
        await ctx.barrier(root)
    keys = [k for k in ctx.names() if not k.startswith("zz-")]
    assert sorted(keys) == names
    assert all(len(e["Records"]) <= 100 for e in ctx.events)
    assert len(ctx.events) <= 40  # batched: full batches at once, the rest within 1 s


async def test_restart_does_not_refire_but_a_modified_file_fires_again(root: Path) -> None:
    state = MemoryState()
    async with running(root, state) as ctx:
        (root / "a.txt").write_text("one")
        (root / "b.txt").write_text("two")
        await ctx.wait_key("a.txt")
        await ctx.wait_key("b.txt")
    first_etag = hashlib.md5(b"one").hexdigest()
    async with running(root, state) as ctx2:
        await ctx2.barrier(root)
        assert not [k for k in ctx2.names() if not k.startswith("zz-")]
        (root / "a.txt").write_text("one, edited")
        record = await ctx2.wait_key("a.txt")
    assert record["s3"]["object"]["eTag"] == hashlib.md5(b"one, edited").hexdigest() != first_etag


async def test_modified_while_stopped_fires_on_start_with_existing(root: Path) -> None:
    state = MemoryState()
    async with running(root, state) as ctx:
        (root / "a.txt").write_text("v1")
        await ctx.wait_key("a.txt")
    (root / "a.txt").write_text("v2 longer")
    (root / "c.txt").write_text("new while stopped")
    async with running(root, state) as ctx2:
        await ctx2.wait_key("a.txt")
        await ctx2.wait_key("c.txt")
        await ctx2.barrier(root)
    assert sorted(k for k in ctx2.names() if not k.startswith("zz-")) == ["a.txt", "c.txt"]


async def test_on_startup_none_ignores_existing_files(root: Path) -> None:
    (root / "old.txt").write_text("old")
    async with running(root, on_startup="none") as ctx:
        (root / "new.txt").write_text("new")
        await ctx.wait_key("new.txt")
        await ctx.barrier(root)
    assert "old.txt" not in ctx.names()


async def test_on_startup_existing_fires_for_present_files(root: Path) -> None:
    (root / "old.txt").write_text("old")
    async with running(root, on_startup="existing") as ctx:
        record = await ctx.wait_key("old.txt")
    assert record["s3"]["object"]["size"] == 3


async def test_removed_events(root: Path) -> None:
    async with running(root, events=["created", "removed"]) as ctx:
        (root / "gone.txt").write_text("x")
        created = await ctx.wait_key("gone.txt")
        (root / "gone.txt").unlink()
        await ctx.wait_for(lambda: "gone.txt" in ctx.names("ObjectRemoved:Delete"))
    removed = next(r for r in ctx.records if r["eventName"] == "ObjectRemoved:Delete")
    assert removed["s3"]["object"] == {
        "key": "gone.txt",
        "sequencer": removed["s3"]["object"]["sequencer"],
    }
    assert removed["s3"]["object"]["sequencer"] > created["s3"]["object"]["sequencer"]


async def test_removed_not_fired_unless_configured(root: Path) -> None:
    async with running(root) as ctx:
        (root / "gone.txt").write_text("x")
        await ctx.wait_key("gone.txt")
        (root / "gone.txt").unlink()
        await ctx.barrier(root)
    assert all(r["eventName"] == "ObjectCreated:Put" for r in ctx.records)


async def test_patterns_and_ignore(root: Path) -> None:
    async with running(root, patterns=["*.csv", "*.txt"], ignore=["skip*", "*.txt"]) as ctx:
        for name in ("skip.csv", "notes.txt", "data.json", "upload.csv.part", "~lock.csv"):
            (root / name).write_text("no")
        (root / "x.csv").write_text("yes")
        await ctx.wait_key("x.csv")
        (root / "zz-last.csv").write_text("yes")
        await ctx.wait_key("zz-last.csv")
    assert sorted(ctx.names()) == ["x.csv", "zz-last.csv"]


async def test_explicit_pattern_opts_into_in_progress_names(root: Path) -> None:
    async with running(root, patterns=["*.part"]) as ctx:
        (root / "movie.part").write_text("wanted")
        await ctx.wait_key("movie.part")


async def test_recursive_off_sees_only_top_level(root: Path) -> None:
    (root / "sub").mkdir()
    async with running(root, recursive=False) as ctx:
        (root / "sub" / "deep.txt").write_text("deep")
        await ctx.barrier(root)
    assert not [k for k in ctx.names() if "deep" in k]


async def test_recursive_on_uses_slash_keys_and_sees_moved_in_dirs(root: Path) -> None:
    (root / "sub").mkdir()
    outside = root.parent / "batch 7"
    outside.mkdir()
    (outside / "one.txt").write_text("1")
    async with running(root, recursive=True) as ctx:
        (root / "sub" / "deep.txt").write_text("deep")
        await ctx.wait_key("sub/deep.txt")
        outside.rename(root / "batch 7")
        await ctx.wait_key("batch+7/one.txt")


async def test_symlink_pointing_outside_the_root_is_refused(root: Path) -> None:
    secret = root.parent / "secret.txt"
    secret.write_text("do not deliver")
    with structlog.testing.capture_logs() as logs:
        async with running(root) as ctx:
            (root / "link.txt").symlink_to(secret)
            await ctx.barrier(root)
    assert "link.txt" not in ctx.names()
    refused = [e for e in logs if e["event"] == "filewatch.path_refused"]
    assert refused
    assert refused[0]["path"].endswith("link.txt")


def _replace_dir(d: Path) -> None:
    for child in d.iterdir():
        child.unlink()
    d.rmdir()
    d.mkdir()


async def test_root_deleted_and_recreated_is_watched_again(root: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(root) as ctx:
            (root / "before.txt").write_text("1")
            await ctx.wait_key("before.txt")
            _replace_dir(root)
            (root / "after.txt").write_text("2")
            await ctx.wait_key("after.txt")
            await ctx.barrier(root)  # the new root is watched, not just rescanned once
    assert any(e["event"] == "filewatch.root_replaced" for e in logs)


async def test_symlink_inside_the_root_is_delivered(root: Path) -> None:
    (root / "target.txt").write_text("inside")
    async with running(root, on_startup="none") as ctx:
        (root / "alias.txt").symlink_to(root / "target.txt")
        record = await ctx.wait_key("alias.txt")
    assert record["s3"]["object"]["size"] == 6


async def test_event_shape_matches_s3_notification(root: Path) -> None:
    async with running(root) as ctx:
        (root / "a b=c.txt").write_bytes(b"hello")
        await ctx.wait_key("a+b%3Dc.txt")
    assert len(ctx.events) == 1
    assert list(ctx.events[0]) == ["Records"]
    r = ctx.events[0]["Records"][0]
    assert list(r) == [
        "eventVersion",
        "eventSource",
        "awsRegion",
        "eventTime",
        "eventName",
        "userIdentity",
        "requestParameters",
        "responseElements",
        "s3",
    ]
    assert r["eventVersion"] == "2.1"
    assert r["eventSource"] == "aws:s3"
    assert re.fullmatch(r"[a-z]{2}-[a-z]+-\d", r["awsRegion"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["eventTime"])
    assert r["eventName"] == "ObjectCreated:Put"
    assert set(r["userIdentity"]) == {"principalId"}
    assert r["requestParameters"] == {"sourceIPAddress": "127.0.0.1"}
    assert set(r["responseElements"]) == {"x-amz-request-id", "x-amz-id-2"}
    s3 = r["s3"]
    assert list(s3) == ["s3SchemaVersion", "configurationId", "bucket", "object"]
    assert s3["s3SchemaVersion"] == "1.0"
    assert s3["configurationId"] == "fn/filewatch[0]"
    assert s3["bucket"] == {
        "name": "uploads",
        "ownerIdentity": {"principalId": s3["bucket"]["ownerIdentity"]["principalId"]},
        "arn": "arn:aws:s3:::uploads",
    }
    obj = s3["object"]
    assert list(obj) == ["key", "size", "eTag", "sequencer"]
    assert obj["key"] == "a+b%3Dc.txt"
    assert obj["size"] == 5
    assert obj["eTag"] == hashlib.md5(b"hello").hexdigest()
    int(obj["sequencer"], 16)


def test_batches_respect_size_and_payload_limit() -> None:
    records = [{"k": "x" * 100} for _ in range(7)]
    assert [len(b) for b in split_batches(records, lambda r: r, 3)] == [3, 3, 1]
    assert [len(b) for b in split_batches(records, lambda r: r, 10, max_bytes=300)] == [
        2,
        2,
        2,
        1,
    ]


def test_key_encoding() -> None:
    assert encode_key("my dir/a b+c=d&e.txt") == "my+dir/a+b%2Bc%3Dd%26e.txt"
    assert encode_key("plain/key-1_2.~x") == "plain/key-1_2.~x"


def test_missing_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        filewatch.create(make_spec(tmp_path / "nope"))


async def test_cursor_holds_10000_files_in_at_most_256_values() -> None:
    state = MemoryState()
    cursor = Cursor(state, "t")
    for i in range(10_000):
        cursor.put(f"dir{i % 7}/file{i}.bin", Entry(Stat(i, i * 1000, i), f"{i:032x}"))
    assert await cursor.flush() == BUCKETS
    assert state.writes == BUCKETS
    assert not cursor.dirty
    cursor.put("dir0/file0.bin", Entry(Stat(1, 2, 3), "e"))
    assert await cursor.flush() == 1
    again = Cursor(state, "t")
    await again.load()
    assert len(again) == 10_000
    assert again.get("dir0/file0.bin") == Entry(Stat(1, 2, 3), "e")
    assert again.get("dir3/file10.bin") == Entry(Stat(10, 10_000, 10), f"{10:032x}")


class FlakyNotify:
    """The real watcher, except that chosen calls lose what it saw (and may fail)."""

    def __init__(self, root: str, recursive: bool, plan: list[str]) -> None:
        self.inner = RustNotify([root], False, False, 300, recursive, True)
        self.plan = plan
        self.lost = threading.Event()

    def watch(self, debounce_ms: int, step_ms: int, timeout_ms: int, stop: Any) -> Any:
        result = self.inner.watch(debounce_ms, step_ms, timeout_ms, stop)
        if isinstance(result, set) and self.plan:
            action = self.plan.pop(0)
            self.lost.set()
            if action == "fail":
                raise WatchfilesRustInternalError("error in underlying watcher: simulated")
            return set()  # "drop": the kernel queue overflowed
        return result

    def close(self) -> None:
        self.inner.close()


async def test_watcher_failure_rescans_and_fires_missed_files(root: Path) -> None:
    plans = [["fail"]]

    def factory(path: str, recursive: bool) -> FlakyNotify:
        return FlakyNotify(path, recursive, plans.pop(0) if plans else [])

    with structlog.testing.capture_logs() as logs:
        async with running(root, source_kw={"notify_factory": factory}) as ctx:
            (root / "missed.txt").write_text("the watcher lost this")
            record = await ctx.wait_key("missed.txt")
            await ctx.barrier(root)
    assert record["s3"]["object"]["size"] == 21
    assert ctx.names().count("missed.txt") == 1
    names = [e["event"] for e in logs]
    assert "filewatch.watch_failed" in names
    assert any(
        e["event"] == "filewatch.rescan" and "watch_failed" in e["reason"].split("+") for e in logs
    )


async def test_periodic_rescan_recovers_dropped_events(root: Path) -> None:
    notifies: list[FlakyNotify] = []

    def factory(path: str, recursive: bool) -> FlakyNotify:
        notifies.append(FlakyNotify(path, recursive, ["drop"]))
        return notifies[-1]

    kw = {"notify_factory": factory, "rescan_interval_s": 0.5}
    async with running(root, source_kw=kw) as ctx:
        (root / "dropped.txt").write_text("overflowed")
        record = await ctx.wait_key("dropped.txt")
    assert notifies[0].lost.is_set()
    assert record["s3"]["object"]["eTag"] == hashlib.md5(b"overflowed").hexdigest()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"path": ""}, r"filewatch\.path: a directory is required, got ''"),
        ({"events": ["created", "modified"]}, r"filewatch\.events: must be created and/or"),
        ({"on_startup": "all"}, r"filewatch\.on_startup: must be existing or none, got 'all'"),
        ({"settle": -1}, r"filewatch\.settle: must be >= 0, got -1"),
        ({"batch_size": 0}, r"filewatch\.batch_size: must be >= 1, got 0"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(
    root: Path, config: dict[str, Any], message: str
) -> None:
    spec = make_spec(root, **{k: v for k, v in config.items() if k != "path"})
    if "path" in config:
        spec.config.path = config["path"]
    with pytest.raises(ConfigError, match=message):
        filewatch.create(spec)


def test_unset_numbers_take_their_defaults(root: Path) -> None:
    spec = make_spec(root, settle=None, batch_size=None, maximum_batching_window=None)
    source = filewatch.FileWatchSource(spec)
    assert (source.options.settle, source.options.batch_size, source.options.window) == (
        0.5,
        1,
        0.0,
    )


async def test_a_watch_limit_at_start_is_a_source_error_with_the_remedy(root: Path) -> None:
    def factory(path: str, recursive: bool) -> RustNotify:
        raise OSError(errno.ENOSPC, "No space left on device")

    source = filewatch.FileWatchSource(make_spec(root), notify_factory=factory)
    with pytest.raises(SourceError, match=r"fs\.inotify\.max_user_watches or set recursive: false"):
        await source.serve(RecordingContext(source.spec, MemoryState()))


async def test_a_watcher_that_cannot_be_reopened_at_once_is_retried(root: Path) -> None:
    calls: list[str] = []

    def factory(path: str, recursive: bool) -> Any:
        calls.append(path)
        if len(calls) == 1:
            return FlakyNotify(path, recursive, ["fail"])
        if len(calls) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        return FlakyNotify(path, recursive, [])

    with structlog.testing.capture_logs() as logs:
        async with running(root, source_kw={"notify_factory": factory}) as ctx:
            (root / "missed.txt").write_text("lost while the watcher was down")
            await ctx.wait_key("missed.txt")
            await ctx.barrier(root)  # the third watcher delivers new files
    assert len(calls) == 3
    errors = [e["error"] for e in logs if e["event"] == "filewatch.watch_failed"]
    assert len(errors) == 2
    assert "Too many open files" in errors[1]


async def test_a_root_whose_attributes_change_is_still_watched(root: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(root) as ctx:
            (root / "before.txt").write_text("1")
            await ctx.wait_key("before.txt")
            root.chmod(0o700)  # an event on the root itself, the same directory
            os.utime(root, (1, 1))
            await ctx.barrier(root)
    assert not [e for e in logs if e["event"] == "filewatch.root_replaced"]


async def test_files_removed_or_unwanted_while_stopped_at_a_startup_scan(root: Path) -> None:
    """At a start with ``existing``: a delivered file gone since fires ObjectRemoved; one
    that no longer matches the patterns is forgotten silently."""
    state = MemoryState()
    async with running(root, state) as ctx:
        for name in ("gone.csv", "kept.csv", "notes.txt"):
            (root / name).write_text(name)
            await ctx.wait_key(name)
    (root / "gone.csv").unlink()
    async with running(root, state, patterns=["*.csv"], events=["created", "removed"]) as ctx2:
        await ctx2.wait_for(lambda: "gone.csv" in ctx2.names("ObjectRemoved:Delete"))
        (root / "zz-last.csv").write_text("a barrier the patterns match")
        await ctx2.wait_key("zz-last.csv")
    assert ctx2.names("ObjectRemoved:Delete") == ["gone.csv"]
    assert ctx2.names() == ["zz-last.csv"]
    cursor = Cursor(state, "fn/filewatch[0]")
    await cursor.load()
    assert cursor.get("notes.txt") is None
    assert cursor.get("gone.csv") is None
    assert cursor.get("kept.csv") is not None


async def test_on_startup_none_drops_files_deleted_while_stopped(root: Path) -> None:
    state = MemoryState()
    async with running(root, state) as ctx:
        (root / "a.txt").write_text("a")
        (root / "b.txt").write_text("b")
        await ctx.wait_key("a.txt")
        await ctx.wait_key("b.txt")
    (root / "a.txt").unlink()
    async with running(root, state, on_startup="none", events=["created", "removed"]) as ctx2:
        await ctx2.barrier(root)
    assert ctx2.names("ObjectRemoved:Delete") == []  # none: the past is not replayed
    cursor = Cursor(state, "fn/filewatch[0]")
    await cursor.load()
    assert cursor.get("a.txt") is None
    assert cursor.get("b.txt") is not None


async def test_an_outside_symlink_is_reported_once(root: Path) -> None:
    secret = root.parent / "secret.txt"
    secret.write_text("do not deliver")
    with structlog.testing.capture_logs() as logs:
        async with running(root) as ctx:
            (root / "link.txt").symlink_to(secret)
            await ctx.barrier(root)
            os.utime(root / "link.txt", (1, 1), follow_symlinks=False)  # seen again
            await ctx.barrier(root)
    refused = [e for e in logs if e["event"] == "filewatch.path_refused"]
    assert len(refused) == 1
    assert "link.txt" not in ctx.names()


async def test_files_ready_during_the_backoff_wait_behind_the_refused_batch(root: Path) -> None:
    async with running(root, refusals=1) as ctx:
        assert isinstance(ctx, RefusingContext)
        (root / "a.csv").write_text("1")
        await ctx.wait_for(lambda: len(ctx.refused) == 1)
        (root / "b.csv").write_text("2")  # settles inside the 0.5 s backoff
        await ctx.wait_key("b.csv")
    assert ctx.names() == ["a.csv", "b.csv"]  # the refused batch first, nothing twice
    assert len(ctx.refused) == 1
    # b.csv being ready did not cut the backoff short (the first retry waits 0.5 s)
    assert ctx.arrived_at[0] - ctx.refused_at[0] >= 0.5 - 0.01


class BrokenContext(RecordingContext):
    """A queue that fails in a way retrying cannot cure."""

    async def invoke_async(self, event: Any) -> str:
        raise SourceError("fn: the function's configuration is gone")


async def test_a_delivery_error_that_is_not_retryable_ends_the_source(root: Path) -> None:
    spec = make_spec(root)
    source = filewatch.FileWatchSource(spec)
    (root / "a.csv").write_text("1")
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - checked below
        with anyio.fail_after(WAIT_S):
            await source.serve(BrokenContext(spec, MemoryState()))
    leaves = [caught.value]
    while isinstance(leaves[-1], BaseExceptionGroup):
        leaves.append(leaves[-1].exceptions[0])
    assert isinstance(leaves[-1], SourceError)
    assert "configuration is gone" in str(leaves[-1])


async def test_a_directory_moved_out_fires_removed_for_every_file_under_it(root: Path) -> None:
    (root / "batch").mkdir()
    async with running(root, events=["created", "removed"]) as ctx:
        for name in ("batch/a.txt", "batch/b.txt", "top.txt"):
            (root / name).write_text(name)
            await ctx.wait_key(name)
        (root / "batch").rename(root.parent / "archived")  # one event, for the directory
        await ctx.wait_for(lambda: len(ctx.names("ObjectRemoved:Delete")) == 2)
        await ctx.barrier(root)
    assert sorted(ctx.names("ObjectRemoved:Delete")) == ["batch/a.txt", "batch/b.txt"]


async def test_special_files_and_symlink_loops_are_not_delivered(root: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(root) as ctx:
            os.mkfifo(root / "pipe")
            (root / "loop-a").symlink_to(root / "loop-b")
            (root / "loop-b").symlink_to(root / "loop-a")
            await ctx.barrier(root)
    assert [k for k in ctx.names() if not k.startswith("zz-")] == []
    refused = {
        e["path"].rsplit("/", 1)[1]: e["reason"]
        for e in logs
        if e["event"] == "filewatch.path_refused"
    }
    assert "pipe" not in refused  # ignored quietly, not an error
    assert refused["loop-a"].startswith("cannot stat: Too many levels of symbolic links")
