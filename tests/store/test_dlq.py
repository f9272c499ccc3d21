"""``eventrun dlq list|show|redrive|purge``: round trips against a running daemon (the /dlq
API, bearer token) and directly on the config's store (no daemon). The handler appends each
event id it handled to a ledger file, so "re-invoked exactly once" is checked, not assumed."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from eventrun.cli import main
from eventrun.dispatch._destinations import SinkRouter
from eventrun.dispatch._records import stream_failure_record
from eventrun.observe._metrics import render_metrics
from eventrun.store import QueueLimits, _dlq
from eventrun.store._open import open_store
from eventrun.store._retention import DlqRetention
from eventrun.store._sqlite import SqliteStore
from eventrun.testing import FakeClock, MemoryStream
from tests._daemon import daemon
from tests._dispatch_kit import FAST, Handler, running
from tests._dispatch_kit import until as until_settled
from tests._runtime_kit import running_app, write_app

HANDLERS = """
import os, pathlib

def work(event, context):
    broken = pathlib.Path(os.environ["BROKEN"])
    ident = event["id"]
    if broken.exists() and ident in broken.read_text().split():
        raise RuntimeError(f"{ident} is broken")
    with open(os.environ["LEDGER"], "a") as f:
        f.write(f"{context.function_name} {ident}\\n")
    return {"done": ident}
"""

CONFIG = """
store: {{url: "sqlite:///state.db"}}
server: {{port: {port}}}
functions:
  work:
    handler: handlers:work
    maximum_retry_attempts: 0
    environment: {{LEDGER: "{root}/ledger.txt", BROKEN: "{root}/broken.txt"}}
  other:
    handler: handlers:work
    maximum_retry_attempts: 0
    environment: {{LEDGER: "{root}/ledger.txt", BROKEN: "{root}/broken.txt"}}
"""


def make_app(root: Path, port: int = 9000) -> Path:
    return write_app(root, CONFIG.format(root=root, port=port), {"handlers.py": HANDLERS})


def ledger(root: Path) -> Counter[str]:
    path = root / "ledger.txt"
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def cli(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return result


async def acli(args: list[str]) -> Result:
    return await anyio.to_thread.run_sync(cli, args)


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


async def until(check: Callable[[], Any], what: str, timeout_s: float = 30) -> None:
    with anyio.fail_after(timeout_s):
        while not await check():  # noqa: ASYNC110 - store state has no event
            await anyio.sleep(0.02)


def stream_record(ident: str) -> bytes:
    """A stream failure record (as the dispatcher writes it) whose batch event is
    ``{"id": ident, "Records": []}``."""
    doc = stream_failure_record(
        request_id="r-1",
        function="work",
        condition="RetryAttemptsExhausted",
        invoke_count=3,
        function_error="Unhandled",
        batch_info={"RedisStreamsBatchInfo": {"shardId": "orders", "batchSize": 1}},
        payload={"id": ident, "Records": []},
    )
    return json.dumps(doc).encode()


async def test_direct_store_round_trip(tmp_path: Path) -> None:
    config = make_app(tmp_path)
    (tmp_path / "broken.txt").write_text("a2 a3")
    async with running_app(config) as rt:
        for ident in ("a1", "a2", "a3"):
            await rt.enqueue("work", json.dumps({"id": ident}).encode())

        async def dead_lettered() -> bool:
            return await rt.store.depth("local:work-dlq") == 2

        await until(dead_lettered, "two failures in the DLQ")
        await rt.store.put("local:work-dlq", [stream_record("s1")])
        await rt.store.put("local:manual", [b'{"id": "m1"}'])
        await rt.store.put("local:trash", [b'{"id": "t1"}', b'{"id": "t2"}'])
    assert ledger(tmp_path) == Counter({"work a1": 1})
    (tmp_path / "broken.txt").unlink()  # "fix the bug"
    c = ["-c", str(config)]

    # list / show, with the daemon stopped: straight on the SQLite store
    assert ok_json(await acli(["dlq", "list", "--json", *c])) == {
        "queues": {"local:manual": 1, "local:trash": 2, "local:work-dlq": 3}
    }
    listed = ok_json(await acli(["dlq", "list", "work-dlq", "--json", *c]))
    kinds = [(e["kind"], e["function"], e["condition"]) for e in listed["entries"]]
    assert kinds == [
        ("async", "work", "RetriesExhausted"),
        ("async", "work", "RetriesExhausted"),
        ("stream", "work", "RetryAttemptsExhausted"),
    ]
    first = listed["entries"][0]
    shown = ok_json(await acli(["dlq", "show", first["id"], *c]))
    assert shown["payload"]["requestPayload"] in ({"id": "a2"}, {"id": "a3"})
    assert shown["payload"]["responsePayload"]["errorType"] == "RuntimeError"
    missing = await acli(["dlq", "show", "no-such-id", *c])
    assert missing.exit_code == 1
    assert "no entry" in missing.output

    # a dry run changes nothing; a plain message needs --to
    dry = ok_json(await acli(["dlq", "redrive", "local:work-dlq", "--dry-run", "--json", *c]))
    assert [r["function"] for r in dry["redriven"]] == ["work", "work", "work"]
    manual = ok_json(await acli(["dlq", "redrive", "local:manual", "--json", *c]))
    assert manual["redriven"] == []
    assert "use --to" in manual["skipped"][0]["reason"]
    bad = await acli(["dlq", "redrive", "local:manual", "--to", "nope", *c])
    assert bad.exit_code == 2
    assert "no function 'nope'" in bad.output

    # redrive: one entry first (--limit), then the rest; then the plain message to `other`
    one = ok_json(await acli(["dlq", "redrive", "local:work-dlq", "--limit", "1", "--json", *c]))
    assert len(one["redriven"]) == 1
    rest = ok_json(await acli(["dlq", "redrive", "local:work-dlq", "--json", *c]))
    assert len(rest["redriven"]) == 2
    assert rest["skipped"] == []
    text = await acli(["dlq", "redrive", "manual", "--to", "other", *c])
    assert text.exit_code == 0
    assert "local:manual: redrove 1, skipped 0" in text.output
    purged = await acli(["dlq", "purge", "local:trash", "--yes", *c])
    assert purged.exit_code == 0
    assert "purged 2" in purged.output
    assert ok_json(await acli(["dlq", "list", "--json", *c])) == {"queues": {}}

    # the daemon runs the redriven events from async:FUNCTION: each exactly once
    async with running_app(config) as rt:
        work, other = rt.functions["work"].async_invoker.stats, rt.functions["other"].async_invoker

        async def drained() -> bool:
            counted = work.succeeded == 3 and other.stats.succeeded == 1
            return counted and not await rt.store.queues()  # acked after counting

        await until(drained, "redriven events invoked")
    assert ledger(tmp_path) == Counter(
        {"work a1": 1, "work a2": 1, "work a3": 1, "work s1": 1, "other m1": 1}
    )


async def test_crash_mid_redrive_loses_nothing(tmp_path: Path) -> None:
    """The event is queued before its DLQ entry is removed: when queueing fails on the
    third entry, two moved, the third and the rest are still in the DLQ."""
    store = open_store("sqlite:///state.db", config_dir=tmp_path)
    async with store:
        payloads = [json.dumps({"id": f"e{i}"}).encode() for i in range(5)]
        await store.put("local:q", payloads)
        calls = []

        async def enqueue(function: str, event: bytes, meta: dict[str, Any]) -> str:
            calls.append(event)
            if len(calls) == 3:
                raise OSError("disk full")
            await store.put(f"async:{function}", [event], meta=meta)
            return str(len(calls))

        with pytest.raises(OSError, match="disk full"):
            await _dlq.redrive(store, "local:q", functions=["work"], enqueue=enqueue, to="work")
        moved = [json.loads(e.payload)["id"] for e in await store.peek("async:work")]
        left = [json.loads(e.payload)["id"] for e in await store.peek("local:q")]
    assert moved == ["e0", "e1"]
    assert left == ["e2", "e3", "e4"]


def test_daemon_api_round_trip(tmp_path: Path) -> None:
    from tests.fixtures._ports import free_port

    port = free_port()
    config = make_app(tmp_path, port)
    (tmp_path / "broken.txt").write_text("b1 b2")
    token = "dlq-test-token-0123"
    with daemon(config, port=port, env={"EVENTRUN_TOKENS": token}) as d:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=d.url, headers=auth, timeout=30) as http:
            for ident in ("b0", "b1", "b2"):
                r = http.post(
                    "/2015-03-31/functions/work/invocations",
                    json={"id": ident},
                    headers={"X-Amz-Invocation-Type": "Event"},
                )
                assert r.status_code == 202
            deadline = time.monotonic() + 30
            while http.get("/dlq").json()["queues"].get("local:work-dlq") != 2:
                assert time.monotonic() < deadline, "failures never reached the DLQ"
                time.sleep(0.05)
            assert httpx.get(f"{d.url}/dlq").status_code == 401  # the same auth as the API
            assert http.get("/dlq/local:nope/x").status_code == 404
            assert http.get("/dlq/async:work").status_code == 400
            r = http.post("/dlq/work-dlq/redrive", json={"limit": -1})
            assert r.status_code == 400

        (tmp_path / "broken.txt").unlink()
        url = ["--url", d.url]
        env: dict[str, str | None] = {"EVENTRUN_TOKEN": token}
        no_token: dict[str, str | None] = {"EVENTRUN_TOKEN": None, "EVENTRUN_TOKENS": None}
        assert cli(["dlq", "list", *url], env=no_token).exit_code == 1  # 401
        listed = ok_json(cli(["dlq", "list", "local:work-dlq", "--json", *url], env=env))
        assert sorted(e["payload"]["requestPayload"]["id"] for e in listed["entries"]) == [
            "b1",
            "b2",
        ]
        shown = ok_json(cli(["dlq", "show", listed["entries"][0]["id"], *url], env=env))
        assert shown["id"] == listed["entries"][0]["id"]
        missing = cli(["dlq", "show", "no-such-id", "--queue", "work-dlq", *url], env=env)
        assert missing.exit_code == 1  # the API's 404 is "not found", not an error
        assert missing.output == "error: no entry 'no-such-id' in local:work-dlq\n"
        dry = ok_json(cli(["dlq", "redrive", "work-dlq", "--dry-run", "--json", *url], env=env))
        assert sorted(r["id"] for r in dry["redriven"]) == sorted(
            e["id"] for e in listed["entries"]
        )
        assert ok_json(cli(["dlq", "list", "--json", *url], env=env)) == {
            "queues": {"local:work-dlq": 2}
        }  # the dry run moved nothing
        report = ok_json(cli(["dlq", "redrive", "--json", *url], env=env))
        assert [len(r["redriven"]) for r in report["reports"]] == [2]
        deadline = time.monotonic() + 30
        while ledger(tmp_path) != Counter({"work b0": 1, "work b1": 1, "work b2": 1}):
            assert time.monotonic() < deadline, ledger(tmp_path)
            time.sleep(0.05)
        assert ok_json(cli(["dlq", "list", "--json", *url], env=env)) == {"queues": {}}

        # purge through the API
        (tmp_path / "broken.txt").write_text("b3")
        with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {token}"}) as http:
            http.post(
                "/2015-03-31/functions/work/invocations",
                json={"id": "b3"},
                headers={"X-Amz-Invocation-Type": "Event"},
            )
            deadline = time.monotonic() + 30
            while http.get("/dlq").json()["queues"].get("local:work-dlq") != 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        purged = cli(["dlq", "purge", "local:work-dlq", "-y", *url], env=env)
        assert purged.exit_code == 0
        assert "purged 1" in purged.output
    assert ledger(tmp_path) == Counter({"work b0": 1, "work b1": 1, "work b2": 1})


# -- bounded queues: a full DLQ, retention, pages bounded in bytes ---------------------------


def _poison(records: list[dict[str, Any]]) -> Any:
    raise RuntimeError("poison")


async def test_a_full_dlq_keeps_the_record_unacknowledged_until_room_is_made(
    tmp_path: Path,
) -> None:
    """The failure record of a stream batch cannot go into a DLQ at its cap: the put is
    refused (nothing is dropped), the dispatcher keeps the source record unacknowledged
    while the router retries, and delivers it once an entry of the DLQ is removed."""
    limits = QueueLimits(max_depth=1)
    async with (
        SqliteStore(tmp_path / "s.db", limits=limits) as store,
        SinkRouter(connections=None, config_dir=tmp_path, store=store, backoff=FAST) as router,
    ):
        [blocker] = await store.put("local:fn-dlq", [b'{"already": "here"}'])
        stream = MemoryStream()
        stream.put("s0", b"poison-pill")
        handler = Handler(fn=_poison)
        with capture_logs() as logs:
            async with running(
                stream, handler, on_failure=router.publisher("local:fn-dlq"), max_retry_attempts=0
            ):
                await handler.wait_calls(1)
                with anyio.fail_after(20):
                    # the refusals are counted by the store; nothing signals them
                    while store.full.counts.get("local:fn-dlq", 0) < 3:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                assert stream.acked == []
                assert stream.lag() == 1
                assert await store.usage("local:fn-dlq") == (1, len(b'{"already": "here"}'))
                await store.ack("local:fn-dlq", [blocker])  # an operator makes room
                await until_settled(stream, lambda: stream.lag() == 0)
        assert stream.acked == [("s0", 0)]
        [entry] = await store.peek("local:fn-dlq")
        record = json.loads(entry.payload)
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert [e for e in logs if e["event"] == "queue.full"] == [
            {
                "event": "queue.full",
                "queue": "local:fn-dlq",
                "limit": "depth",
                "cap": 1,
                "log_level": "warning",
            }
        ]
        assert router.failures["local:fn-dlq"] >= 3


async def test_retention_deletes_old_and_excess_dlq_entries(tmp_path: Path) -> None:
    clock = FakeClock(start=1_000_000.0)
    async with SqliteStore(tmp_path / "s.db", clock=clock) as store:
        await store.put("local:a", [b"old-1", b"old-2"])
        await store.put("async:f", [b"queued-long-ago"])
        await clock.advance(15 * 86400)
        young = await store.put("local:a", [b"young-1", b"young-2", b"young-3"])
        retention = DlqRetention(clock, max_age_s=14 * 86400, max_depth=None)
        with capture_logs() as logs:
            assert await retention.sweep(store) == 2
        assert [e.id for e in await store.peek("local:a")] == young
        assert await store.depth("async:f") == 1  # async queues age out by maximum_event_age
        assert retention.expired == {"local:a": 2}
        [expired] = [e for e in logs if e["event"] == "dlq.expired"]
        assert (expired["queue"], expired["count"]) == ("local:a", 2)
        by_depth = DlqRetention(clock, max_age_s=-1, max_depth=1)
        assert await by_depth.sweep(store) == 2
        assert [e.id for e in await store.peek("local:a")] == young[2:]
        assert by_depth.expired == {"local:a": 2}


RETENTION_YAML = """
store: {url: "sqlite:///state.db", dlq_retention: 1h}
functions:
  work:
    handler: handlers:work
"""


async def test_the_runtime_sweeps_expired_dlq_entries(tmp_path: Path) -> None:
    config = write_app(tmp_path, RETENTION_YAML, {"handlers.py": HANDLERS})
    async with open_store("sqlite:///state.db", config_dir=tmp_path) as store:
        await store.put("local:work-dlq", [b'{"n": 1}', b'{"n": 2}'])
        [kept] = await store.put("local:other", [b'{"n": 3}'])
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute(
        "UPDATE entries SET enqueued_at = enqueued_at - 7200 WHERE queue = ?", ("local:work-dlq",)
    )
    db.commit()
    db.close()
    async with running_app(config, serve_http=False) as rt:

        async def swept() -> bool:
            return await rt.store.depth("local:work-dlq") == 0

        await until(swept, "the retention sweep")
        assert rt.retention.expired == {"local:work-dlq": 2}
        assert [e.id for e in await rt.store.peek("local:other")] == [kept]
        exposition = render_metrics(rt.metrics)[0].decode()
    assert 'eventrun_dlq_expired_total{queue="local:work-dlq"} 2.0' in exposition.splitlines()


def _sized(n: int, size: int) -> bytes:
    return json.dumps({"n": n, "pad": "x" * size}).encode()


async def test_dlq_pages_are_bounded_in_bytes_and_follow_to_the_end(tmp_path: Path) -> None:
    config = make_app(tmp_path)
    async with open_store("sqlite:///state.db", config_dir=tmp_path) as store:
        ids = await store.put("local:big", [_sized(n, 60_000) for n in range(40)])
        ids += await store.put("local:big", [_sized(40, 2_000_000)])
        # one page: under the byte bound, with the offset of the next
        page, next_offset = await _dlq.list_page(store, "local:big", limit=1000)
        assert sum(len(json.dumps(e)) for e in page) <= _dlq.PAGE_BYTES
        assert 0 < len(page) < 40
        assert next_offset == len(page)
        seen: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page, offset = await _dlq.list_page(store, "local:big", limit=1000, offset=offset)
            seen += page
        assert [e["id"] for e in seen] == ids
        assert not any(e["truncated"] for e in seen[:40])
        big = seen[40]
        assert big["truncated"] is True
        assert len(big["payload"]) == _dlq.PREVIEW_BYTES
        assert big["size_bytes"] == len(_sized(40, 2_000_000))
        whole = await _dlq.get_entry(store, "local:big", ids[40])
        assert whole is not None
        assert whole["payload"] == json.loads(_sized(40, 2_000_000))

    # the CLI follows the pages (straight on the store)
    listed = ok_json(
        await acli(["dlq", "list", "big", "--json", "--limit", "1000", "-c", str(config)])
    )
    assert [e["id"] for e in listed["entries"]] == ids

    # the API answers one bounded page at a time
    async with running_app(config) as rt:
        url = f"http://127.0.0.1:{rt.bound_port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.get("/dlq/local:big?limit=1000")
            assert r.status_code == 200
            assert len(r.content) <= _dlq.PAGE_BYTES + 1000
            doc = r.json()
            assert doc["depth"] == 41
            assert doc["next_offset"] == len(doc["entries"]) < 41


def _destination_record(ident: str, condition: str, arn: Any) -> bytes:
    """An async destination record as the invoker writes it (only the fields redrive reads)."""
    context = {"condition": condition, "functionArn": arn, "requestId": f"r-{ident}"}
    return json.dumps({"requestContext": context, "requestPayload": {"id": ident}}).encode()


async def test_redrive_selects_by_id_skips_success_and_refuses_unknown_functions(
    tmp_path: Path,
) -> None:
    """``ids`` leaves the other entries in place; ``skip_success`` leaves Success records;
    a record of a function no longer configured, one with no usable functionArn and a
    payload that is not JSON are skipped with a reason, never dropped."""
    arn = "arn:aws:lambda:eu-west-1:000000000000:function:{}"
    store = open_store("sqlite:///state.db", config_dir=tmp_path)
    async with store:
        await store.put(
            "local:q",
            [
                _destination_record("ok", "Success", arn.format("work")),
                _destination_record("gone", "RetriesExhausted", arn.format("removed")),
                _destination_record("noarn", "RetriesExhausted", 42),
                _destination_record("short", "RetriesExhausted", "arn:aws:lambda:x"),
                b"not json \xff",
                _destination_record("redo", "RetriesExhausted", arn.format("work")),
            ],
        )
        entries = await store.peek("local:q")
        by_payload = {e.payload: e.id for e in entries}
        redo_id = entries[-1].id
        calls: list[tuple[str, Any]] = []

        async def enqueue(function: str, event: bytes, meta: dict[str, Any]) -> str:
            calls.append((function, json.loads(event)))
            return f"rid-{len(calls)}"

        only = await _dlq.redrive(store, "q", functions=["work"], enqueue=enqueue, ids=[redo_id])
        assert [r["id"] for r in only.redriven] == [redo_id]
        assert only.skipped == []
        assert calls == [("work", {"id": "redo"})]
        assert await store.depth("local:q") == 5  # the others are untouched

        report = await _dlq.redrive(
            store, "q", functions=["work"], enqueue=enqueue, skip_success=True
        )
        reasons = {s["id"]: s["reason"] for s in report.skipped}
        assert report.redriven == []
        assert reasons == {
            entries[0].id: "a success record",
            entries[1].id: "function 'removed' is not configured; use --to",
            entries[2].id: "no function known; use --to",
            entries[3].id: "no function known; use --to",
            entries[4].id: "no function known; use --to",
        }
        assert len(calls) == 1
        assert await store.depth("local:q") == 5
        text = _dlq.entry_doc(next(e for e in entries if e.id == by_payload[b"not json \xff"]))
        assert text["payload"] == "not json \ufffd"
        assert text["kind"] == "message"


async def test_a_page_filled_to_its_limit_says_whether_more_follow(tmp_path: Path) -> None:
    store = open_store("sqlite:///state.db", config_dir=tmp_path)
    async with store:
        await store.put("local:q", [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
        page, next_offset = await _dlq.list_page(store, "q", limit=2)
        assert [e["payload"] for e in page] == [{"n": 1}, {"n": 2}]
        assert next_offset == 2
        page, next_offset = await _dlq.list_page(store, "q", limit=1, offset=2)
        assert [e["payload"] for e in page] == [{"n": 3}]
        assert next_offset is None  # the limit was reached on the last entry


PARKED_YAML = """
store: {url: "sqlite:///state.db", max_queue_depth: 1}
functions:
  parked:
    handler: parked:handler
    concurrency: 1
    timeout: 60
    environment: {STARTED: "%(root)s/started", RELEASE: "%(root)s/release"}
"""
PARKED = """
import os, pathlib, time

def handler(event, context):
    pathlib.Path(os.environ["STARTED"]).touch()
    while not pathlib.Path(os.environ["RELEASE"]).exists():
        time.sleep(0.02)
    return event
"""


async def test_a_redrive_into_a_full_queue_is_429_and_moves_nothing(tmp_path: Path) -> None:
    """The function's queue holds its one entry (store.max_queue_depth: 1, the handler
    busy with it): a redrive into it is refused with 429 naming the queue and the cap,
    and the DLQ entry stays where it is."""
    config = write_app(tmp_path, PARKED_YAML % {"root": tmp_path}, {"parked.py": PARKED})
    async with running_app(config) as rt:
        [kept] = await rt.store.put("local:manual", [b'{"id": "m1"}'])
        await rt.enqueue("parked", b'{"id": "first"}')

        async def started() -> bool:
            return (tmp_path / "started").exists()

        await until(started, "the first invocation running")
        base = f"http://127.0.0.1:{rt.bound_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            r = await http.post(
                "/dlq/local:manual/redrive",
                json={"to": "parked"},
                headers={"X-Eventrun-Request": "1"},
            )
        assert r.status_code == 429, r.text
        message = r.json()["message"]
        assert "async:parked" in message
        assert "max_queue_depth (1 entries)" in message
        assert [e.id for e in await rt.store.peek("local:manual")] == [kept]
        (tmp_path / "release").touch()


# -- the CLI's text output, prompts and errors (straight on the store, and over the API) ------


def _table_rows(text: str) -> list[list[str]]:
    """The cells of a rich table's header and rows."""
    lines = [line.replace("┃", "│") for line in text.splitlines()]
    return [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]


async def _fill(root: Path) -> tuple[str, str, dict[str, float]]:
    async with open_store("sqlite:///state.db", config_dir=root) as store:
        stream_id = (await store.put("local:work-dlq", [stream_record("s1")]))[0]
        (big_id,) = await store.put("local:manual", [_sized(1, _dlq.PREVIEW_BYTES)])
        await store.put("local:trash", [b'{"id": "t1"}'])
        await store.put("local:a-first", [stream_record("f1"), stream_record("f2")])
        enqueued = {
            e.id: e.enqueued_at
            for q in ("work-dlq", "manual")
            for e in await store.peek(f"local:{q}")
        }
    return stream_id, big_id, enqueued


async def _depths(root: Path, *queues: str) -> list[int]:
    async with open_store("sqlite:///state.db", config_dir=root) as store:
        return [await store.depth(q) for q in queues]


def test_cli_text_output_prompts_and_errors(tmp_path: Path) -> None:
    config = make_app(tmp_path)
    c = ["-c", str(config)]
    stream_id, big_id, enqueued = anyio.run(_fill, tmp_path)
    wide = {"COLUMNS": "200"}

    listed = cli(["dlq", "list", *c], env=wide)
    assert listed.exit_code == 0, listed.output
    assert _table_rows(listed.output) == [
        ["Queue", "Depth"],
        ["local:a-first", "2"],
        ["local:manual", "1"],
        ["local:trash", "1"],
        ["local:work-dlq", "1"],
    ]
    entries = cli(["dlq", "list", "work-dlq", *c], env=wide)
    assert entries.exit_code == 0, entries.output
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(enqueued[stream_id]))
    size = len(stream_record("s1"))
    assert _table_rows(entries.output) == [
        ["Id", "Enqueued", "Function", "Condition", "Size"],
        [stream_id, when, "work", "RetryAttemptsExhausted", f"{size} B"],
    ]
    manual = cli(["dlq", "list", "manual", *c], env=wide)
    rows = _table_rows(manual.output)
    # a plain message: no function, its kind for a condition, longer than a page preview
    assert rows[1][2:] == [
        "None",
        "message",
        f"{len(_sized(1, _dlq.PREVIEW_BYTES))} B (truncated here; dlq show ID)",
    ]
    assert rows[1][0] == big_id
    empty = cli(["dlq", "list", "nothing-here", "--json", *c])
    assert ok_json(empty) == {"queue": "local:nothing-here", "entries": []}

    # redrive of every queue with --limit 1: the first queue (sorted) uses it up and the
    # others are left alone
    limited = cli(["dlq", "redrive", "--limit", "1", *c])
    assert limited.exit_code == 0, limited.output
    assert limited.output.splitlines() == ["local:a-first: redrove 1, skipped 0"]
    depths = anyio.run(_depths, tmp_path, "local:a-first", "async:work", "local:work-dlq")
    assert depths == [1, 1, 1]
    # a skipped entry is printed with its reason
    skipped = cli(["dlq", "redrive", "manual", *c])
    assert skipped.exit_code == 0, skipped.output
    assert skipped.output.splitlines() == [
        "local:manual: redrove 0, skipped 1",
        f"  skipped {big_id}: no function known; use --to",
    ]

    # purge asks first: "n" aborts and deletes nothing, "y" deletes
    refused = CliRunner().invoke(main, ["dlq", "purge", "trash", *c], input="n\n")
    assert refused.exit_code == 1
    assert "Delete every entry of local:trash? [y/N]" in refused.output
    assert "Aborted" in refused.output
    assert anyio.run(_depths, tmp_path, "local:trash") == [1]
    agreed = CliRunner().invoke(main, ["dlq", "purge", "trash", *c], input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert agreed.output.splitlines()[-1] == "local:trash: purged 1"

    # a queue that is not local: is refused by show and purge, with the error on stderr
    for args in (["show", "x", "--queue", "async:work"], ["purge", "async:work", "-y"]):
        bad = cli(["dlq", *args, *c])
        assert bad.exit_code == 2  # DlqError: a usage error
        assert bad.output == "error: dlq: 'async:work' is not a local queue; expected local:NAME\n"


def test_cli_against_an_unreachable_daemon_is_an_error() -> None:
    with socket.socket() as sock:  # bound then closed: nobody listens there
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = cli(["dlq", "list", "--url", url])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot reach the daemon at {url}: ")


async def test_a_dry_run_over_the_api_names_each_entry_once(tmp_path: Path) -> None:
    """A real redrive over the API goes in chunks (each removes what it moved); a dry run
    removes nothing, so it is one request: chunking it would name the first entries again."""
    from eventrun.cli._dlq import CHUNK

    config = make_app(tmp_path)
    async with running_app(config) as rt:
        ids = await rt.store.put("local:bulk", [stream_record(f"e{i}") for i in range(CHUNK + 50)])
        url = f"http://127.0.0.1:{rt.bound_port}"
        args = ["dlq", "redrive", "bulk", "--dry-run", "--limit", str(CHUNK + 20), "--json"]
        dry = ok_json(await acli([*args, "--url", url]))
        assert [r["id"] for r in dry["redriven"]] == ids[: CHUNK + 20]
        assert await rt.store.depth("local:bulk") == CHUNK + 50
        assert await rt.store.depth("async:work") == 0
