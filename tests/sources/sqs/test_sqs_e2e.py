"""SQS end to end: a real moto server, the real runtime (in-process or the ``eventrun run``
daemon), worker processes, and a ledger of what the handlers saw.

Every message body is a JSON object with ``id`` (unique), ``seq`` (per-group sequence
number) and optional controls read by the handler below (``fail_times``: fail while the
message's ApproximateReceiveCount is at most this; ``poison``: always fail; ``kind``: for
filters). The handler appends one JSON line per record to ``$LEDGER`` (one ``write`` on an
``O_APPEND`` descriptor per batch): ``ok`` lines after the batch succeeded, ``failed``
lines for the records it failed. Waits poll the ledger and the queue's own counters
(GetQueueAttributes) in bounded loops: there is no event for "the queue is drained".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventrun.runtime._runtime import Runtime
from tests._daemon import Daemon
from tests._runtime_kit import running_app, write_app
from tests.fixtures._ports import free_port
from tests.fixtures.moto import FAKE_ENV, REGION, MotoServer, Queue

pytestmark = pytest.mark.sqs

HANDLERS = '''
import json, os, time


def _append(path, lines):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(line + "\\n" for line in lines).encode())
    finally:
        os.close(fd)


def handler(event, context):
    """PARTIAL=1: report failures in batchItemFailures (FIFO: a failed record also fails
    the rest of its group in the batch, unprocessed), else raise on the first failure."""
    started = time.time()
    partial = bool(os.environ.get("PARTIAL"))
    ok, failed, broken = [], [], set()
    for record in event["Records"]:
        msg = json.loads(record["body"])
        count = int(record["attributes"]["ApproximateReceiveCount"])
        group = record["attributes"].get("MessageGroupId", "")
        line = {"id": msg["id"], "seq": msg.get("seq", 0), "group": group,
                "message_id": record["messageId"], "receives": count}
        if group in broken or msg.get("poison") or count <= msg.get("fail_times", 0):
            failed.append(line)
            if group:
                broken.add(group)
            continue
        ok.append(line)
    slow = float(os.environ.get("SLOW") or 0)
    if slow:
        time.sleep(slow)
    delay = float(os.environ.get("DELAY") or 0)
    if delay:
        time.sleep(delay)
    finished = time.time()
    lines = [json.dumps({**l, "ok": True, "t0": started, "t1": finished, "pid": os.getpid()})
             for l in ([] if failed and not partial else ok)]
    lines += [json.dumps({**l, "ok": False, "t0": started, "t1": finished}) for l in failed]
    _append(os.environ["LEDGER"], lines)
    if failed and not partial:
        raise ValueError(f"{len(failed)} records failed, e.g. {failed[0]['id']}")
    if partial:
        return {"batchItemFailures": [{"itemIdentifier": l["message_id"]} for l in failed]}
    return None


def capture(event, context):
    _append(os.environ["EVENTS"], [json.dumps(event)])
'''


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAKE_ENV.items():
            mp.setenv(key, value)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.delenv("AWS_PROFILE", raising=False)
        server = MotoServer(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
async def sqs_client(moto: MotoServer) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client("sqs", **moto.connection.client_kwargs()) as client:
        yield client


# -- helpers ---------------------------------------------------------------------------


def app(
    root: Path,
    moto: MotoServer,
    triggers: Sequence[str],
    *,
    handler: str = "ledger:handler",
    runtime: str = "process",
    concurrency: int = 4,
    environment: dict[str, str] | None = None,
    grace: str = "5s",
) -> Path:
    """An app with one function ``fn`` and the given ``sqs`` triggers (YAML flow
    mappings, ``connection: main`` added); the ledger is ``root/ledger.jsonl``."""
    env = {"LEDGER": str(root / "ledger.jsonl"), **(environment or {})}
    lines = "\n".join(
        f"              - sqs: {{connection: main, {trigger}}}" for trigger in triggers
    )
    yaml = f"""
        connections:
          sqs:
            main:
              region: {REGION}
              endpoint_url: "{moto.endpoint_url}"
              aws_access_key_id: testing
              aws_secret_access_key: testing
        store: {{url: "sqlite:///state.db"}}
        shutdown_grace: {grace}
        functions:
          fn:
            handler: {handler}
            runtime: {runtime}
            concurrency: {concurrency}
            min_warm: {1 if runtime == "process" else 0}
            timeout: 60s
            environment: {json.dumps(env)}
            triggers:
{lines}
    """
    return write_app(root, yaml, {"ledger.py": HANDLERS})


def bodies(n: int, *, groups: int = 0, **extra: Any) -> list[dict[str, Any]]:
    """``n`` message bodies; with ``groups``, spread round-robin over groups g0..gN-1
    with a per-group ``seq`` from 1."""
    seqs: Counter[str] = Counter()
    out = []
    for i in range(n):
        group = f"g{i % groups}" if groups else ""
        seqs[group] += 1
        out.append({"id": f"m{i:05d}", "group": group, "seq": seqs[group], **extra})
    return out


async def send(client: Any, queue: Queue, docs: Sequence[dict[str, Any]]) -> None:
    """SendMessageBatch in chunks of 10: concurrently for a standard queue, in order (one
    chunk after the other) for a FIFO queue, grouping by each body's ``group``."""
    fifo = queue.name.endswith(".fifo")

    async def chunk(part: Sequence[dict[str, Any]]) -> None:
        entries = []
        for i, doc in enumerate(part):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": json.dumps(doc)}
            if fifo:
                entry["MessageGroupId"] = doc["group"]
                entry["MessageDeduplicationId"] = doc["id"]
            entries.append(entry)
        response = await client.send_message_batch(QueueUrl=queue.url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]

    parts = [docs[i : i + 10] for i in range(0, len(docs), 10)]
    if fifo:
        for part in parts:
            await chunk(part)
        return
    limiter = anyio.CapacityLimiter(8)

    async def limited(part: Sequence[dict[str, Any]]) -> None:
        async with limiter:
            await chunk(part)

    async with anyio.create_task_group() as tg:
        for part in parts:
            tg.start_soon(limited, part)


async def depth(client: Any, queue: Queue) -> int:
    """Messages in the queue: visible + in flight + delayed."""
    response = await client.get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )
    return sum(int(v) for v in response["Attributes"].values())


async def counters(client: Any, queue: Queue) -> tuple[int, int]:
    """(visible, in flight) of a queue."""
    response = await client.get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attrs = response["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Complete lines only (a concurrent append may be half visible)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def handled(path: Path) -> Counter[str]:
    """How many times each id was handled successfully."""
    return Counter(line["id"] for line in read_ledger(path) if line["ok"])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    try:
        with anyio.fail_after(timeout_s):
            while not await check():  # noqa: ASYNC110 - polls the broker: no event exists
                await anyio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


def all_handled_and_empty(
    client: Any, queue: Queue, ledger: Path, ids: set[str]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return ids <= set(handled(ledger)) and await depth(client, queue) == 0

    return check


async def acks_counted(stats: Any, count: int) -> None:
    """Wait until the dispatcher counted ``count`` acks: the queue is empty once the last
    DeleteMessageBatch landed, the count moves when the whole ack call (several batches
    of 10) returned."""

    async def check() -> bool:
        return bool(stats.acked >= count)

    await wait_until(check, 10, f"{count} deletes counted")


@asynccontextmanager
async def started(config: Path) -> AsyncIterator[Runtime]:
    """The in-process runtime, once every source is connected (``runtime.ready``)."""
    async with running_app(config, serve_http=False) as runtime:
        with anyio.fail_after(30):
            await runtime.ready.wait()
        yield runtime


async def receive_all(client: Any, queue: Queue, n: int, timeout_s: float = 20) -> list[Any]:
    got: dict[str, Any] = {}
    with anyio.fail_after(timeout_s):
        while len(got) < n:
            response = await client.receive_message(
                QueueUrl=queue.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            for message in response.get("Messages", []):
                got[message["MessageId"]] = message
    return list(got.values())


async def logged(daemon: Daemon, event: str, timeout_s: float = 5) -> dict[str, Any]:
    """The first log line named ``event`` of a daemon that may have exited already (its
    stderr is read on a thread, so the line may arrive a moment later)."""
    with anyio.fail_after(timeout_s):
        while not (found := daemon.events(event)):  # noqa: ASYNC110 - another thread's
            await anyio.sleep(0.05)
    return found[0]


# -- 1. a standard queue drained: every message handled once, deleted -----------------

STANDARD_MESSAGES = 2000
WINDOW = 200


async def test_standard_queue_all_processed_and_deleted(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    """2,000 messages through a standard queue. They are sent while the runtime runs, at
    most WINDOW ahead of the handler: moto scans the whole queue on every receive and
    delete, so 2,000 messages sent up front take minutes to drain (measured: ~25 msg/s at
    800 queued), while a queue kept short drains at ~60-80 msg/s."""
    queue = moto.create_queue()
    docs = bodies(STANDARD_MESSAGES)
    config = app(tmp_path, moto, [f"queue_url: {queue.url}, batch_size: 10"])
    ledger = tmp_path / "ledger.jsonl"
    ids = {d["id"] for d in docs}
    async with started(config) as runtime:
        began = time.monotonic()
        for start in range(0, len(docs), 100):
            with anyio.fail_after(60):
                while start - len(handled(ledger)) > WINDOW:  # noqa: ASYNC110 - a file
                    await anyio.sleep(0.05)
            await send(sqs_client, queue, docs[start : start + 100])
        await wait_until(all_handled_and_empty(sqs_client, queue, ledger, ids), 60, "drained")
        elapsed = time.monotonic() - began
        [source] = runtime.sources.values()
        assert source.dispatcher is not None
        stats = source.dispatcher.stats
        await acks_counted(stats, STANDARD_MESSAGES)
        assert stats.acked == STANDARD_MESSAGES
        assert stats.invoke_errors == 0
    seen = handled(ledger)
    assert set(seen) == ids
    assert max(seen.values()) == 1, "nothing failed, so nothing may be handled twice"
    assert {line["receives"] for line in read_ledger(ledger)} == {1}
    assert await depth(sqs_client, queue) == 0
    pids = {line["pid"] for line in read_ledger(ledger)}
    print(
        f"sqs standard: {STANDARD_MESSAGES} messages in {elapsed:.1f}s "
        f"({STANDARD_MESSAGES / elapsed:.0f} msg/s), {len(pids)} worker processes"
    )


# -- 2. FIFO: order per group; a failing group blocks only itself ---------------------


async def test_fifo_order_per_group_and_failing_group_blocks_only_itself(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue(fifo=True)
    docs = bodies(160, groups=8)
    stuck = next(d for d in docs if d["group"] == "g0" and d["seq"] == 1)
    stuck["fail_times"] = 4
    await send(sqs_client, queue, docs)
    config = app(
        tmp_path,
        moto,
        [f"queue_url: {queue.url}, batch_size: 10, report_batch_item_failures: true"],
        environment={"PARTIAL": "1"},
    )
    ledger = tmp_path / "ledger.jsonl"
    async with started(config):
        ids = {d["id"] for d in docs}
        await wait_until(all_handled_and_empty(sqs_client, queue, ledger, ids), 60, "drained")
    lines = read_ledger(ledger)
    ok = [line for line in lines if line["ok"]]
    assert Counter(line["id"] for line in ok) == dict.fromkeys((d["id"] for d in docs), 1)
    # Order per group: each group's messages were handled exactly in seq order.
    per_group: dict[str, list[int]] = defaultdict(list)
    for line in ok:
        per_group[line["group"]].append(line["seq"])
    assert per_group == {f"g{g}": list(range(1, 21)) for g in range(8)}
    # g0's first message failed four times (receives 1..4), then succeeded on the 5th.
    stuck_lines = [line for line in lines if line["id"] == stuck["id"]]
    assert [(line["ok"], line["receives"]) for line in stuck_lines] == [
        (False, 1),
        (False, 2),
        (False, 3),
        (False, 4),
        (True, 5),
    ]
    stuck_ok_at = stuck_lines[-1]["t0"]
    first_failure_at = stuck_lines[0]["t0"]
    # Nothing later of g0 was handled before its first message succeeded ...
    assert all(line["t0"] >= stuck_ok_at for line in ok if line["group"] == "g0")
    # ... while every other group ran to completion meanwhile.
    for group in (f"g{g}" for g in range(1, 8)):
        last = max(line["t1"] for line in ok if line["group"] == group)
        assert last < stuck_ok_at, f"{group} was held up by g0"
    print(f"fifo: g0 blocked for {stuck_ok_at - first_failure_at:.1f}s")


# -- 3. partial batch failure: only the listed ids come back --------------------------


async def test_partial_batch_failure_returns_only_listed_ids(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    docs = bodies(200)
    failing = {d["id"] for d in docs[::7]}
    for d in docs:
        if d["id"] in failing:
            d["fail_times"] = 1
    await send(sqs_client, queue, docs)
    config = app(
        tmp_path,
        moto,
        [f"queue_url: {queue.url}, batch_size: 10, report_batch_item_failures: true"],
        environment={"PARTIAL": "1"},
    )
    ledger = tmp_path / "ledger.jsonl"
    ids = {d["id"] for d in docs}
    async with started(config):
        await wait_until(all_handled_and_empty(sqs_client, queue, ledger, ids), 60, "drained")
    lines = read_ledger(ledger)
    failures = [line for line in lines if not line["ok"]]
    assert sorted(line["id"] for line in failures) == sorted(failing)
    assert {line["receives"] for line in failures} == {1}
    # Every id handled exactly once; the listed ones on their 2nd receive, the rest on
    # their 1st: nothing that succeeded in a partly failed batch came back.
    ok = [line for line in lines if line["ok"]]
    assert Counter(line["id"] for line in ok) == dict.fromkeys(ids, 1)
    assert {line["id"]: line["receives"] for line in ok} == {
        i: 2 if i in failing else 1 for i in ids
    }
    # The failing ids shared their batches with successes (real partial failures).
    batches_with_success = {line["t0"] for line in ok if line["receives"] == 1}
    assert any(line["t0"] in batches_with_success for line in failures)


# -- 4. visibility heartbeat: a handler slower than the visibility timeout ------------


async def test_visibility_heartbeat_prevents_duplicates(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    docs = bodies(6)
    await send(sqs_client, queue, docs)
    config = app(
        tmp_path,
        moto,
        [f"queue_url: {queue.url}, batch_size: 3, visibility_timeout: 2s"],
        concurrency=2,
        environment={"SLOW": "5"},
    )
    ledger = tmp_path / "ledger.jsonl"
    ids = {d["id"] for d in docs}
    async with started(config) as runtime:
        await wait_until(all_handled_and_empty(sqs_client, queue, ledger, ids), 60, "drained")
        [source] = runtime.sources.values()
        assert source.dispatcher is not None
        assert source.dispatcher.stats.polled == 6, "a message was received twice"
    lines = read_ledger(ledger)
    assert Counter(line["id"] for line in lines) == dict.fromkeys(ids, 1)
    assert {line["receives"] for line in lines} == {1}
    assert all(line["t1"] - line["t0"] >= 5 for line in lines)


# -- 5. redrive: the queue's own RedrivePolicy, and max_receive_count + on_failure ----


async def test_queue_redrive_policy_moves_poison_to_dlq(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    dlq = moto.create_queue(prefix="dlq")
    queue = moto.create_queue(dlq=dlq, max_receive_count=2)
    docs = bodies(30)
    docs[13]["poison"] = True
    poison = docs[13]["id"]
    await send(sqs_client, queue, docs)
    config = app(
        tmp_path,
        moto,
        [f"queue_url: {queue.url}, batch_size: 10, report_batch_item_failures: true"],
        environment={"PARTIAL": "1"},
    )
    ledger = tmp_path / "ledger.jsonl"
    good = {d["id"] for d in docs} - {poison}

    async def done() -> bool:
        return (
            good <= set(handled(ledger))
            and await depth(sqs_client, queue) == 0
            and await depth(sqs_client, dlq) == 1
        )

    async with started(config):
        await wait_until(done, 60, "the poison message in the DLQ")
    [moved] = await receive_all(sqs_client, dlq, 1)
    assert json.loads(moved["Body"]) == docs[13]
    lines = read_ledger(ledger)
    assert [(line["ok"], line["receives"]) for line in lines if line["id"] == poison] == [
        (False, 1),
        (False, 2),
    ]
    assert handled(ledger) == dict.fromkeys(good, 1)


async def test_max_receive_count_sends_lambda_failure_record_to_sqs(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    dlq = moto.create_queue(prefix="dlq")
    queue = moto.create_queue()  # no RedrivePolicy: eventrun counts the receives
    on_failure = f'on_failure: "sqs:main/{dlq.name}"'
    docs = bodies(20)
    docs[4]["poison"] = True
    poison = docs[4]["id"]
    await send(sqs_client, queue, docs)
    config = app(
        tmp_path,
        moto,
        [f"queue_url: {queue.url}, batch_size: 1, max_receive_count: 2, {on_failure}"],
    )
    ledger = tmp_path / "ledger.jsonl"
    good = {d["id"] for d in docs} - {poison}

    async def done() -> bool:
        return (
            good <= set(handled(ledger))
            and await depth(sqs_client, queue) == 0
            and await depth(sqs_client, dlq) == 1
        )

    async with started(config):
        await wait_until(done, 60, "the failure record in the DLQ")
    [message] = await receive_all(sqs_client, dlq, 1)
    record = json.loads(message["Body"])
    assert message["MessageAttributes"]["trigger"]["StringValue"] == "fn/sqs[0]"
    assert list(record) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "SQSBatchInfo",
        "payload",
    ]
    context = record["requestContext"]
    assert context["condition"] == "RetryAttemptsExhausted"
    assert context["functionArn"] == f"arn:aws:lambda:{REGION}:000000000000:function:fn"
    assert context["approximateInvokeCount"] == 2
    assert context["requestId"]
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    [failed] = record["payload"]["Records"]
    assert record["SQSBatchInfo"] == {
        "queueArn": queue.arn,
        "messageIds": [failed["messageId"]],
        "batchSize": 1,
    }
    assert json.loads(failed["body"]) == docs[4]
    assert failed["attributes"]["ApproximateReceiveCount"] == "2"
    assert failed["eventSourceARN"] == queue.arn
    lines = read_ledger(ledger)
    assert [(line["ok"], line["receives"]) for line in lines if line["id"] == poison] == [
        (False, 1),
        (False, 2),
    ]
    assert handled(ledger) == dict.fromkeys(good, 1)


# -- 6. SIGKILL mid-run, restart: nothing lost -----------------------------------------


# two daemon starts, a 60 s and a 150 s wait: the default 120 s timeout is less than its
# own bounds (moto handles ~60 messages/s, fewer with both cores busy)
@pytest.mark.timeout(330)
async def test_sigkill_and_restart_loses_nothing(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    docs = bodies(600)
    ids = {d["id"] for d in docs}
    await send(sqs_client, queue, docs)
    config = app(
        tmp_path,
        moto,
        # 30 s: heartbeats (every 15 s) never lapse with both cores busy. With 10 s a
        # message handled after its visibility ran out (a late heartbeat) was delivered
        # again without being in flight at the kill (149 duplicates, 147 in flight).
        [f"queue_url: {queue.url}, batch_size: 10, visibility_timeout: 30s"],
        concurrency=2,
        environment={"DELAY": "0.05"},
    )
    ledger = tmp_path / "ledger.jsonl"
    first = Daemon(config)
    await anyio.to_thread.run_sync(first.start)
    try:

        async def some_handled() -> bool:
            return len(handled(ledger)) >= 200

        await wait_until(some_handled, 60, "200 messages handled")
    finally:
        await anyio.to_thread.run_sync(first.kill)
    # Read at once: a message in flight at the kill stays hidden for up to 30 s more.
    _, in_flight = await counters(sqs_client, queue)
    handled_before = len(handled(ledger))
    assert in_flight > 0, "nothing was in flight at the kill"
    assert handled_before < len(docs), "the run finished before the kill"

    second = Daemon(config)
    await anyio.to_thread.run_sync(second.start)
    try:
        await wait_until(
            all_handled_and_empty(sqs_client, queue, ledger, ids), 150, "drained after restart"
        )
    finally:
        await anyio.to_thread.run_sync(second.terminate)
    seen = handled(ledger)
    assert set(seen) == ids
    duplicates = sum(seen.values()) - len(seen)
    redelivered = {line["id"] for line in read_ledger(ledger) if line["receives"] >= 2}
    print(
        f"sqs sigkill: {handled_before} handled before the kill, {in_flight} in flight, "
        f"{len(redelivered)} redelivered, {duplicates} duplicates"
    )
    # A duplicate is a message handled but not yet deleted at the kill: in flight then.
    assert duplicates <= in_flight
    assert {i for i, n in seen.items() if n > 1} <= redelivered


# -- 7. the delivered event, field by field (lambda-semantics §3.1) -------------------

SHAPE_KEYS = [
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfMessageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
]


def check_common(record: dict[str, Any], sent: dict[str, Any], body: str, queue: Queue) -> None:
    """Every field that does not depend on the attributes."""
    assert record["messageId"] == sent["MessageId"]
    assert isinstance(record["receiptHandle"], str)
    assert record["receiptHandle"]
    assert record["body"] == body
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest() == sent["MD5OfMessageBody"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue.arn
    assert record["awsRegion"] == REGION


async def test_event_shape_field_by_field(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    standard = moto.create_queue()
    fifo = moto.create_queue(fifo=True)
    before_ms = int(time.time() * 1000) - 1
    with_attrs = await sqs_client.send_message(
        QueueUrl=standard.url,
        MessageBody='{"order": 7}',
        MessageAttributes={
            "Author": {"DataType": "String", "StringValue": "John Grisham"},
            "Count": {"DataType": "Number", "StringValue": "42"},
            "Blob": {"DataType": "Binary", "BinaryValue": b"\xff\x00\x01"},
        },
    )
    plain = await sqs_client.send_message(QueueUrl=standard.url, MessageBody="plain text")
    fifo_sent = await sqs_client.send_message(
        QueueUrl=fifo.url,
        MessageBody="fifo body",
        MessageGroupId="grp-1",
        MessageDeduplicationId="dedup-1",
    )
    events_file = tmp_path / "events.jsonl"
    config = app(
        tmp_path,
        moto,
        [f"queue_url: {standard.url}, batch_size: 10", f"queue_name: {fifo.name}"],
        handler="ledger:capture",
        environment={"EVENTS": str(events_file)},
    )

    async def captured() -> bool:
        return (
            events_file.exists()
            and sum(len(json.loads(e)["Records"]) for e in events_file.read_text().splitlines())
            >= 3
            and await depth(sqs_client, standard) == 0
            and await depth(sqs_client, fifo) == 0
        )

    async with started(config):
        await wait_until(captured, 30, "three records captured and deleted")
    after_ms = int(time.time() * 1000) + 1
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert all(list(event) == ["Records"] for event in events)
    records = {r["body"]: r for event in events for r in event["Records"]}
    assert len(records) == 3

    first = records['{"order": 7}']
    assert list(first) == SHAPE_KEYS
    check_common(first, with_attrs, '{"order": 7}', standard)
    assert first["md5OfMessageAttributes"] == with_attrs["MD5OfMessageAttributes"]
    assert first["messageAttributes"] == {
        "Author": {
            "stringValue": "John Grisham",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "Count": {
            "stringValue": "42",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "Blob": {
            "binaryValue": base64.b64encode(b"\xff\x00\x01").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    for record in records.values():
        attrs = record["attributes"]
        assert all(isinstance(v, str) for v in attrs.values())
        assert attrs["ApproximateReceiveCount"] == "1"
        assert before_ms <= int(attrs["SentTimestamp"]) <= after_ms
        assert int(attrs["SentTimestamp"]) <= int(attrs["ApproximateFirstReceiveTimestamp"])
        assert int(attrs["ApproximateFirstReceiveTimestamp"]) <= after_ms
        assert attrs["SenderId"]
    assert list(first["attributes"])[:4] == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ]

    second = records["plain text"]
    assert list(second) == [k for k in SHAPE_KEYS if k != "md5OfMessageAttributes"]
    check_common(second, plain, "plain text", standard)
    assert second["messageAttributes"] == {}
    assert set(second["attributes"]) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }

    third = records["fifo body"]
    check_common(third, fifo_sent, "fifo body", fifo)
    assert "md5OfMessageAttributes" not in third
    fifo_attrs = third["attributes"]
    assert fifo_attrs["MessageGroupId"] == "grp-1"
    assert fifo_attrs["MessageDeduplicationId"] == "dedup-1"
    assert fifo_attrs["SequenceNumber"] == fifo_sent["SequenceNumber"]
    assert list(fifo_attrs)[:7] == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
        "SequenceNumber",
        "MessageGroupId",
        "MessageDeduplicationId",
    ]


# -- 8. filters: non-matching messages deleted without an invocation -------------------


async def test_filtered_out_messages_are_deleted_without_invoking(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    docs = bodies(90)
    for i, d in enumerate(docs):
        d["kind"] = "keep" if i % 3 == 0 else "drop"
    await send(sqs_client, queue, docs)
    await sqs_client.send_message(QueueUrl=queue.url, MessageBody="not json at all")
    pattern = json.dumps({"body": {"kind": ["keep"]}})
    config = app(
        tmp_path,
        moto,
        [
            f"queue_url: {queue.url}, batch_size: 10,"
            f" filter_criteria: {{filters: [{{pattern: '{pattern}'}}]}}"
        ],
    )
    ledger = tmp_path / "ledger.jsonl"
    keep = {d["id"] for d in docs if d["kind"] == "keep"}
    async with started(config) as runtime:
        await wait_until(all_handled_and_empty(sqs_client, queue, ledger, keep), 60, "drained")
        [source] = runtime.sources.values()
        assert source.dispatcher is not None
        stats = source.dispatcher.stats
        await acks_counted(stats, 91)
        assert stats.filtered == 61
        assert stats.acked == 91
    # The handler logs every record it is given: only the matching ones reached it.
    assert handled(ledger) == dict.fromkeys(keep, 1)
    assert len(read_ledger(ledger)) == 30


# -- 9. SIGTERM releases unfinished messages at once ----------------------------------


async def test_sigterm_releases_unfinished_messages(
    tmp_path: Path, moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    docs = bodies(40)
    ids = {d["id"] for d in docs}
    trigger = f"queue_url: {queue.url}, batch_size: 5, visibility_timeout: 60s"
    slow = app(
        tmp_path / "slow",
        moto,
        [trigger],
        concurrency=2,
        environment={"SLOW": "30", "LEDGER": str(tmp_path / "ledger.jsonl")},
        grace="1s",
    )
    fast = app(
        tmp_path / "fast",
        moto,
        [trigger],
        concurrency=2,
        environment={"LEDGER": str(tmp_path / "ledger.jsonl")},
    )
    ledger = tmp_path / "ledger.jsonl"
    first = Daemon(slow)
    await anyio.to_thread.run_sync(first.start)
    try:
        await send(sqs_client, queue, docs)

        async def all_in_flight() -> bool:
            return await counters(sqs_client, queue) == (0, len(docs))

        await wait_until(all_in_flight, 30, "every message received by the daemon")
        terminated_at = time.monotonic()
        status = await anyio.to_thread.run_sync(first.terminate)
    finally:
        await anyio.to_thread.run_sync(first.stop)
    assert status == 0
    assert time.monotonic() - terminated_at < 20
    assert not handled(ledger), "the slow handler must not have finished"
    released = await logged(first, "dispatch.released_unfinished")
    assert released["size"] == len(docs)
    # Visible again at once, not after the 60 s visibility timeout.
    assert await counters(sqs_client, queue) == (len(docs), 0), "\n".join(
        line for line in first.raw if "shutdown" in line or "release" in line or "warn" in line
    )

    second = Daemon(fast)
    await anyio.to_thread.run_sync(second.start)
    try:
        await wait_until(
            all_handled_and_empty(sqs_client, queue, ledger, ids), 30, "drained after restart"
        )
    finally:
        await anyio.to_thread.run_sync(second.terminate)
    assert time.monotonic() - terminated_at < 40
    assert handled(ledger) == dict.fromkeys(ids, 1)
    assert {line["receives"] for line in read_ledger(ledger)} == {2}
