"""Shared by the Kinesis / DynamoDB Streams tests: an app writing a ledger, producers,
ledger readers and waits (bounded polls of the ledger: no event says "all handled")."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from tests._runtime_kit import write_app
from tests.fixtures.moto import REGION, MotoServer

HANDLERS = '''
import base64, json, os, time


def _append(path, lines):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(line + "\\n" for line in lines).encode())
    finally:
        os.close(fd)


def handler(event, context):
    """One ledger line per record after the batch succeeded; raises on a poison record."""
    if os.environ.get("EVENTS"):
        _append(os.environ["EVENTS"], [json.dumps(event)])
    lines = []
    for r in event["Records"]:
        doc = json.loads(base64.b64decode(r["kinesis"]["data"]))
        if doc.get("poison"):
            raise ValueError("poison record " + doc["id"])
        lines.append(json.dumps({
            "id": doc["id"], "key": r["kinesis"]["partitionKey"], "seq": doc["seq"],
            "shard": r["eventID"].split(":")[0], "sn": r["kinesis"]["sequenceNumber"],
            "pid": os.getpid(), "who": os.environ.get("WHO", ""),
        }))
    slow = float(os.environ.get("SLOW") or 0)
    if slow:
        time.sleep(slow)
    _append(os.environ["LEDGER"], lines)


def partial(event, context):
    """Fails a ``fail_once`` record the first time (batchItemFailures by sequence number)."""
    _append(os.environ["EVENTS"], [json.dumps(event)])
    lines, failures = [], []
    for r in event["Records"]:
        doc = json.loads(base64.b64decode(r["kinesis"]["data"]))
        marker = os.path.join(os.environ["MARKS"], doc["id"])
        if doc.get("fail_once") and not os.path.exists(marker):
            open(marker, "w").close()
            failures.append({"itemIdentifier": r["kinesis"]["sequenceNumber"]})
            continue
        lines.append(json.dumps({"id": doc["id"], "sn": r["kinesis"]["sequenceNumber"]}))
    _append(os.environ["LEDGER"], lines)
    return {"batchItemFailures": failures}


def echo(event, context):
    """A pipeline stage: one output per record (published to on_success, keyed like it)."""
    return {"records": [
        {"id": json.loads(base64.b64decode(r["kinesis"]["data"]))["id"]} for r in event["Records"]
    ]}


def window(event, context):
    """Tumbling windows: collect record ids in the state; the final invocation writes them."""
    state = event.get("state") or {}
    ids = list(state.get("ids", []))
    if event["isFinalInvokeForWindow"]:
        _append(os.environ["WINDOWS"], [json.dumps({
            "window": event["window"], "ids": ids, "records": len(event["Records"]),
            "shard": event["shardId"], "arn": event["eventSourceARN"],
        })])
        return {"state": {}}
    for r in event["Records"]:
        ids.append(json.loads(base64.b64decode(r["kinesis"]["data"]))["id"])
    _append(os.environ["LEDGER"], [json.dumps({
        "window": event["window"], "n": len(event["Records"]), "had": len(state.get("ids", [])),
        "early": event["isWindowTerminatedEarly"],
    })])
    return {"state": {"ids": ids}}


def _fail_once(ident, flagged):
    """Raise the first time a flagged record is seen (a marker file per id)."""
    marker = os.path.join(os.environ["MARKS"], ident)
    if flagged and not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("fail once " + ident)


def pt_kinesis(event, context):
    """aws-lambda-powertools' Kinesis batch processor, used as its docs show."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor, EventType, process_partial_response,
    )
    _append(os.environ["EVENTS"], [json.dumps(event)])
    done = []

    def record_handler(record):
        doc = record.kinesis.data_as_json()
        _fail_once(doc["id"], doc.get("fail_once"))
        done.append(json.dumps({"id": doc["id"], "sn": record.kinesis.sequence_number}))

    processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        _append(os.environ["LEDGER"], done)


def pt_ddb(event, context):
    """aws-lambda-powertools' DynamoDB Streams batch processor, used as its docs show."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor, EventType, process_partial_response,
    )
    _append(os.environ["EVENTS"], [json.dumps(event)])
    done = []

    def record_handler(record):
        image = record.dynamodb.new_image
        _fail_once(image["id"], image.get("fail_once"))
        done.append(json.dumps({"id": image["id"], "sn": record.dynamodb.sequence_number}))

    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        _append(os.environ["LEDGER"], done)


def ddb_fail(event, context):
    raise ValueError("always")


def ddb(event, context):
    _append(os.environ["EVENTS"], [json.dumps(event)])
'''


def app(
    root: Path,
    moto: MotoServer | Any,
    trigger: str,
    *,
    kind: str = "kinesis",
    handler: str = "ledger:handler",
    store: str = "sqlite:///state.db",
    environment: dict[str, str] | None = None,
    concurrency: int = 8,
    on_failure: str | None = None,
    on_success: str | None = None,
) -> Path:
    """An app with one function ``fn`` and one ``kind`` trigger (a YAML flow mapping's
    inside; ``connection: main`` added); the ledger is ``root/ledger.jsonl``."""
    env = {"LEDGER": str(root / "ledger.jsonl"), **(environment or {})}
    section = "kinesis" if kind == "kinesis" else "dynamodb"
    extra = f", on_failure: '{on_failure}'" if on_failure else ""
    extra += f", on_success: '{on_success}'" if on_success else ""
    yaml = f"""
        connections:
          {section}:
            main:
              region: {REGION}
              endpoint_url: "{moto.endpoint_url}"
              aws_access_key_id: testing
              aws_secret_access_key: testing
        store: {{url: "{store}"}}
        shutdown_grace: 5s
        functions:
          fn:
            handler: {handler}
            concurrency: {concurrency}
            min_warm: 1
            timeout: 60s
            environment: {json.dumps(env)}
            triggers:
              - {kind}: {{connection: main, {trigger}{extra}}}
    """
    return write_app(root, yaml, {"ledger.py": HANDLERS})


def client_kwargs(moto: MotoServer | Any) -> dict[str, Any]:
    return moto.connection.client_kwargs()


async def create_stream(client: Any, shards: int) -> str:
    """A new stream, once ACTIVE (kinesalite creates asynchronously)."""
    name = f"s-{uuid.uuid4().hex[:10]}"
    await client.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + 10
    while True:
        summary = await client.describe_stream_summary(StreamName=name)
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return name
        assert time.monotonic() < deadline, f"stream {name} not ACTIVE"
        await anyio.sleep(0.02)


def docs(n: int, keys: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    """``n`` documents over ``keys`` partition keys, ``seq`` counting per key."""
    out = []
    for i in range(start, start + n):
        out.append({"id": f"r{i:06d}", "key": f"k{i % keys}", "seq": i // keys, **extra})
    return out


async def put(client: Any, stream: str, items: Sequence[dict[str, Any]]) -> None:
    """PutRecords in chunks of 500, one after the other (per key order = put order)."""
    for i in range(0, len(items), 500):
        chunk = items[i : i + 500]
        answer = await client.put_records(
            StreamName=stream,
            Records=[{"Data": json.dumps(d).encode(), "PartitionKey": d["key"]} for d in chunk],
        )
        assert not answer.get("FailedRecordCount"), answer


async def wait_lines(path: Path, count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Poll a JSON-lines file until it has ``count`` lines; return them."""
    deadline = time.monotonic() + timeout_s
    lines = read_jsonl(path)
    while len(lines) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name}: {len(lines)} lines, expected {count}")
        await anyio.sleep(0.1)
        lines = read_jsonl(path)
    return lines


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` (no event to wait on) until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await anyio.sleep(0.1)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a line being appended is left out)."""
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


async def wait_ids(path: Path, ids: set[str], timeout_s: float = 90) -> list[dict[str, Any]]:
    """Poll the ledger until it holds every id in ``ids``; return its lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = read_jsonl(path)
        missing = ids - {line["id"] for line in lines}
        if not missing:
            return lines
        if time.monotonic() > deadline:
            example = sorted(missing)[:5]
            raise AssertionError(f"{len(missing)} of {len(ids)} never handled, e.g. {example}")
        await anyio.sleep(0.2)


def order_violations(lines: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(per-shard sequence-number regressions, per-key seq regressions) in ledger order,
    counting each record's first handling only (a redelivery repeats what came before)."""
    seen: set[str] = set()
    last_sn: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    shard_bad = key_bad = 0
    for line in lines:
        if line["id"] in seen:
            continue
        seen.add(line["id"])
        sn = int(line["sn"])
        if sn <= last_sn.get(line["shard"], -1):
            shard_bad += 1
        last_sn[line["shard"]] = sn
        if line["seq"] <= last_seq.get(line["key"], -1):
            key_bad += 1
        last_seq[line["key"]] = line["seq"]
    return shard_bad, key_bad
