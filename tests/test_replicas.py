"""Replicas (SPEC §9): three ``eventrun run`` daemons with one config, sharing work.

Every daemon is a real subprocess with the same ``eventrun.yaml`` against one Tansu
broker, one redis-server and one moto server: the store on Redis (``store.url:
redis://...``), a Kafka trigger (one consumer group over a 6-partition topic), an SQS
trigger (competing consumers), a Redis Streams trigger (one consumer group, one consumer
per daemon), a per-second cron trigger and asynchronous (``Event``) invocations sent to
every daemon's Invoke API (queued in the shared store). Handlers append one JSON line per
handled item to a shared ledger (one ``write`` on an ``O_APPEND`` descriptor per batch), so
the tests count exactly what was handled, by whom, across processes.

SQS caveat: moto's threaded server can hand one message to two concurrent receivers (no
lock in its ReceiveMessage); such double deliveries are told apart from eventrun's by
timing (see :func:`duplicates`) and bounded, everything else must be exactly once.

Waits poll the ledger and the brokers' own state in bounded loops: "every replica caught
up" has no single log event to wait on. The cron test runs ~20 s rather than a minute to
keep CI time in bounds; the property checked is the same at every tick.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from tests._daemon import Daemon
from tests._runtime_kit import write_app
from tests.fixtures.kafka import KafkaBroker, create_topic
from tests.fixtures.moto import MotoServer, Queue

pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.sqs, pytest.mark.timeout(240)]

REPLICAS = 3
CONCURRENCY = 4
BATCH = 10
PARTITIONS = 6
VISIBILITY_S = 20
GROUP = "workers"
STREAMS = ["orders", "payments", "events"]

HANDLERS = '''
"""Ledger handlers: one JSON line per handled item, appended to $LEDGER."""
import base64, json, os, time

def _append(lines):
    fd = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(json.dumps(l) + "\\n" for l in lines).encode())
    finally:
        os.close(fd)

def _line(kind, item_id, context, t0):
    return {"kind": kind, "id": item_id, "who": os.environ.get("WHO", ""), "pid": os.getpid(),
            "request": context.aws_request_id, "t0": t0, "t": time.time()}

def _items(event):
    if event.get("eventSource") == "SelfManagedKafka":
        for records in event["records"].values():
            for r in records:
                yield "kafka", json.loads(base64.b64decode(r["value"]))["id"]
    elif "Records" in event and event["Records"][0].get("eventSource") == "aws:sqs":
        for r in event["Records"]:
            yield "sqs", json.loads(r["body"])["id"]
    elif "Records" in event:
        for r in event["Records"]:
            yield "stream", r["redis"]["fields"]["id"]
    else:
        yield "async", event["id"]

def work(event, context):
    t0 = time.time()
    delay = float(os.environ.get("DELAY") or 0)
    if delay:
        time.sleep(delay)
    _append([_line(kind, item, context, t0) for kind, item in _items(event)])

def tick(event, context):
    _append([_line("cron", event["time"], context, time.time())])
'''


# -- the app and its three daemons ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Brokers:
    """The servers every replica shares, with this test's topic and queue."""

    redis_url: str
    kafka: KafkaBroker
    topic: str
    moto: MotoServer
    queue: Queue


def write_replica_app(root: Path, b: Brokers, *, delay_s: float = 0.0) -> Path:
    """One config for every replica: Redis store; Kafka, SQS, stream and cron triggers."""
    # WHO is each replica daemon's own variable: a worker inherits only what its function
    # names, so the config passes it on explicitly (interpolated when the daemon loads it)
    env = {"LEDGER": str(root / "ledger.jsonl"), "DELAY": str(delay_s), "WHO": "${WHO:-}"}
    yaml = f"""
        connections:
          redis: {{main: {{url: "{b.redis_url}"}}}}
          kafka:
            main: {{bootstrap_servers: "{b.kafka.bootstrap}", session_timeout: 2s,
                    heartbeat_interval: 300ms}}
          sqs: {{main: {{region: us-east-1, endpoint_url: "{b.moto.endpoint_url}",
                        aws_access_key_id: testing, aws_secret_access_key: testing}}}}
        server: {{host: 127.0.0.1}}
        store: {{url: "{b.redis_url}"}}
        shutdown_grace: 10s
        functions:
          work:
            handler: ledger:work
            concurrency: {CONCURRENCY}
            min_warm: 1
            timeout: 5s
            retry_delay: 0.2s
            environment: {json.dumps(env)}
            triggers:
              - redis_streams:
                  connection: main
                  streams: {json.dumps(STREAMS)}
                  group: {GROUP}
                  batch_size: {BATCH}
                  claim_idle: 2s
              - kafka:
                  connection: main
                  topics: [{b.topic}]
                  group_id: {GROUP}
                  batch_size: {BATCH}
                  maximum_batching_window: 100ms
              - sqs:
                  connection: main
                  queue_url: "{b.queue.url}"
                  batch_size: {BATCH}
                  visibility_timeout: {VISIBILITY_S}s
          tick:
            handler: ledger:tick
            concurrency: 2
            min_warm: 1
            timeout: 5s
            environment: {json.dumps(env)}
            triggers:
              - cron: {{schedule: "rate(1 second)", catch_up: 3}}
    """
    return write_app(root, yaml, {"ledger.py": HANDLERS})


@contextlib.contextmanager
def replicas(config: Path, n: int = REPLICAS) -> Iterator[list[Daemon]]:
    """``n`` daemons started together (each waits for ``runtime.ready``), stopped at the end."""
    daemons = [Daemon(config, env={"WHO": f"r{i}"}) for i in range(n)]
    try:
        for d in daemons:
            d.start(wait_ready=False)
        for d in daemons:
            d.wait_for(lambda e: e.get("event") == "runtime.ready", 90)
        yield daemons
    finally:
        for d in daemons:
            d.stop()


# -- helpers ----------------------------------------------------------------------------


def read_ledger(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Complete lines only (a concurrent append may be half visible)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return [line for line in lines if kind is None or line["kind"] == kind]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux: /proc/PID/task/TID/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = {int(k) for k in (task / "children").read_text().split()}
                todo.extend(kids - found)
                found |= kids
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie has finished: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    try:
        with anyio.fail_after(timeout_s):
            # brokers' state and a file: nothing to wait on but the next look
            while not await check():  # noqa: ASYNC110
                await anyio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


def entries_plan(per_stream: int, tag: str = "") -> list[tuple[str, dict[str, str]]]:
    return [
        (stream, {"id": f"{tag}{stream}-{i:05d}", "data": json.dumps({"n": i})})
        for i in range(per_stream)
        for stream in STREAMS
    ]


async def produce(client: aioredis.Redis, entries: list[tuple[str, dict[str, str]]]) -> None:
    for start in range(0, len(entries), 200):
        async with client.pipeline(transaction=False) as pipe:
            for stream, fields in entries[start : start + 200]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()


async def create_group(client: aioredis.Redis) -> None:
    """Create the group up front from the start of each stream, so no replica's start
    position (``$`` vs ``0``) races the producer."""
    for stream in STREAMS:
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)


async def streams_drained(client: aioredis.Redis) -> bool:
    for stream in STREAMS:
        for info in await client.xinfo_groups(stream):
            if info["name"] == GROUP and (info["pending"] or info["lag"]):
                return False
    return True


async def send_async(daemons: list[Daemon], ids: list[str]) -> None:
    """Queue one ``Event`` invocation per id, round-robin over the daemons' Invoke APIs."""
    async with httpx.AsyncClient(timeout=10) as http:
        for i, item in enumerate(ids):
            d = daemons[i % len(daemons)]
            response = await http.post(
                f"{d.url}/2015-03-31/functions/work/invocations",
                headers={"X-Amz-Invocation-Type": "Event"},
                json={"id": item},
            )
            assert response.status_code == 202, response.text


def counts(lines: list[dict[str, Any]]) -> Counter[str]:
    return Counter(line["id"] for line in lines)


FAILURE_EVENTS = ("batch.retry", "batch.failed", "invoke.failed", "source.ack_failed")


def duplicates(
    seen: dict[str, Counter[str]], lines: list[dict[str, Any]]
) -> tuple[dict[str, list[str]], list[str]]:
    """Items handled more than once, by kind, and which SQS ones moto double-delivered.

    moto's threaded server checks and marks a message received without a lock
    (moto/sqs/models.py ``receive_message``), so two concurrent ReceiveMessage calls can
    both get one message: both deliveries then start within the visibility timeout of
    each other. Nothing eventrun does can cause that (it releases a message only after a
    failure or at shutdown, and a handled one it deletes), so such SQS duplicates are
    reported apart; any other duplicate is eventrun's."""
    dupes = {kind: sorted(k for k, v in c.items() if v > 1) for kind, c in seen.items()}
    broker = []
    for item in dupes.get("sqs", []):
        starts = sorted(x["t0"] for x in lines if x["kind"] == "sqs" and x["id"] == item)
        if starts[-1] - starts[0] < VISIBILITY_S:
            broker.append(item)
    dupes["sqs"] = [i for i in dupes.get("sqs", []) if i not in broker]
    return dupes, broker


async def produce_kafka(bootstrap: str, topic: str, ids: list[str]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, item in enumerate(ids):
            await producer.send(topic, json.dumps({"id": item}).encode(), partition=i % PARTITIONS)
        await producer.flush()
    finally:
        await producer.stop()


async def kafka_committed(bootstrap: str, topic: str, produced: int) -> bool:
    """The group committed every partition past its last record (``produced`` records
    went round-robin into a fresh topic). OffsetFetch goes through a consumer that names
    the group but never joins it: Tansu's admin OffsetFetch answer is one aiokafka's admin
    client cannot parse."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP)
    await consumer.start()
    try:
        ends = Counter(i % PARTITIONS for i in range(produced))
        for p in range(PARTITIONS):
            if await consumer.committed(TopicPartition(topic, p)) != ends[p]:
                return False
        return True
    finally:
        await consumer.stop()


def send_sqs(moto: MotoServer, queue: Queue, ids: list[str]) -> None:
    client = moto.boto3_client()
    for start in range(0, len(ids), 10):
        entries = [
            {"Id": str(n), "MessageBody": json.dumps({"id": item})}
            for n, item in enumerate(ids[start : start + 10])
        ]
        assert not client.send_message_batch(QueueUrl=queue.url, Entries=entries).get("Failed")


def sqs_empty(moto: MotoServer, queue: Queue) -> bool:
    attrs = moto.boto3_client().get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(v == "0" for v in attrs.values())


@dataclasses.dataclass
class Workload:
    """What one test sends through every source, and the checks that it all went through."""

    brokers: Brokers
    client: aioredis.Redis
    ledger: Path
    per_source: int

    def __post_init__(self) -> None:
        n = self.per_source
        self.expected = {
            "stream": [f["id"] for _, f in entries_plan(n // len(STREAMS))],
            "kafka": [f"kafka-{i:05d}" for i in range(n)],
            "sqs": [f"sqs-{i:05d}" for i in range(n)],
            "async": [f"async-{i:05d}" for i in range(n)],
        }

    async def send(self, daemons: list[Daemon]) -> None:
        b = self.brokers
        await produce(self.client, entries_plan(self.per_source // len(STREAMS)))
        await produce_kafka(b.kafka.bootstrap, b.topic, self.expected["kafka"])
        await anyio.to_thread.run_sync(send_sqs, b.moto, b.queue, self.expected["sqs"])
        await send_async(daemons, self.expected["async"])

    def seen(self) -> dict[str, Counter[str]]:
        lines = read_ledger(self.ledger)
        return {kind: counts([x for x in lines if x["kind"] == kind]) for kind in self.expected}

    async def wait_done(self, timeout_s: float) -> None:
        """Every item handled at least once and every broker settled (acked/committed)."""
        b = self.brokers

        settled: dict[str, bool] = {}

        async def done() -> bool:
            seen = self.seen()
            if any(len(seen[k]) < len(ids) for k, ids in self.expected.items()):
                return False
            settled["stream"] = await streams_drained(self.client)
            settled["kafka"] = await kafka_committed(
                b.kafka.bootstrap, b.topic, len(self.expected["kafka"])
            )
            settled["sqs"] = await anyio.to_thread.run_sync(sqs_empty, b.moto, b.queue)
            return all(settled.values())

        try:
            await wait_until(done, timeout_s, "every source to be handled and settled")
        except AssertionError as exc:
            progress = {k: f"{len(v)}/{len(self.expected[k])}" for k, v in self.seen().items()}
            raise AssertionError(f"{exc}; handled: {progress}; settled: {settled}") from None

    def check_complete(self) -> dict[str, Counter[str]]:
        seen = self.seen()
        for kind, ids in self.expected.items():
            missing = [i for i in ids if i not in seen[kind]]
            assert not missing, f"{kind}: {len(missing)} of {len(ids)} lost, e.g. {missing[:5]}"
            assert set(seen[kind]) == set(ids), f"{kind}: unexpected ids"
        return seen


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def brokers(
    redis_url: str, kafka_broker: KafkaBroker, moto: MotoServer, client: aioredis.Redis
) -> Brokers:
    """Fresh topic, queue and stream group on the shared servers."""
    kafka_broker.start()
    topic = await create_topic(kafka_broker.bootstrap, PARTITIONS)
    queue = await anyio.to_thread.run_sync(lambda: moto.create_queue(prefix="replicas"))
    await create_group(client)
    return Brokers(redis_url, kafka_broker, topic, moto, queue)


# -- 1. nothing fails: everything exactly once, cron once per tick -----------------------


async def test_three_replicas_share_work_exactly_once(
    tmp_path: Path, brokers: Brokers, client: aioredis.Redis
) -> None:
    config = write_replica_app(tmp_path, brokers)
    work = Workload(brokers, client, tmp_path / "ledger.jsonl", per_source=150)
    with replicas(config) as daemons:
        await work.send(daemons)
        await work.wait_done(60)

        async def cron_shared() -> bool:
            # the per-second cron runs on: 15 ticks (from any replica), two replicas won some
            fired = [e for d in daemons for e in d.events("cron.fired")]
            firing = sum(1 for d in daemons if d.events("cron.fired"))
            return len({e["scheduled_at"] for e in fired}) >= 15 and firing >= 2

        await wait_until(cron_shared, 90, "15 cron ticks, fired by two replicas or more")
    seen = work.check_complete()
    failures = [e for d in daemons for name in FAILURE_EVENTS for e in d.events(name)]
    assert not failures, failures[:3]
    lines = read_ledger(work.ledger)
    dupes, moto_dupes = duplicates(seen, lines)
    assert not any(dupes.values()), f"nothing failed, yet handled twice: {dupes}"
    assert len(moto_dupes) <= len(work.expected["sqs"]) // 20, moto_dupes
    for kind in ("stream", "kafka", "sqs", "async"):
        who = Counter(x["who"] for x in lines if x["kind"] == kind)
        assert len(who) == REPLICAS, f"{kind}: work was not shared by all replicas: {who}"

    # cron: after every daemon stopped, their logs hold every tick any of them fired.
    fired = [e for d in daemons for e in d.events("cron.fired")]
    per_tick = Counter(e["scheduled_at"] for e in fired)
    assert len(fired) == len(per_tick), [t for t, n in per_tick.items() if n > 1]
    ticks = sorted(int(_epoch(t)) for t in per_tick)
    assert len(ticks) >= 15, f"too few ticks fired: {len(ticks)}"
    assert ticks == list(range(ticks[0], ticks[-1] + 1)), "a tick was skipped"
    assert len([d for d in daemons if d.events("cron.fired")]) >= 2, "one replica fired all"
    # each fired tick ran its handler once, on whichever replica leased it
    cron_seen = counts(read_ledger(work.ledger, "cron"))
    assert max(cron_seen.values()) == 1, "a tick's handler ran twice"
    handled = {int(_epoch(t)) for t in cron_seen}
    assert handled <= set(ticks)
    assert len(handled) >= len(ticks) - 3  # the last ones may still be queued at stop


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- 2. one replica stops mid-run: nothing lost, its work goes on elsewhere --------------


async def _stop_one_mid_run(
    tmp_path: Path, brokers: Brokers, client: aioredis.Redis, how: signal.Signals
) -> tuple[Workload, float]:
    config = write_replica_app(tmp_path, brokers, delay_s=0.1)
    # enough work that some is left once the victim has drained (a faster dispatcher
    # let the survivors finish everything during the victim's shutdown)
    work = Workload(brokers, client, tmp_path / "ledger.jsonl", per_source=180)
    with replicas(config) as daemons:
        victim = daemons[0]
        await work.send(daemons)

        async def victim_busy() -> bool:
            return sum(1 for x in read_ledger(work.ledger) if x["who"] == "r0") >= 40

        await wait_until(victim_busy, 60, "the victim replica to be handling work")
        stopping_at = time.time()
        if how == signal.SIGTERM:
            assert victim.terminate(timeout_s=30) == 0, "\n".join(victim.raw[-30:])
            assert victim.events("shutdown.complete"), "the replica did not drain"
        else:
            assert victim.proc is not None
            tree = _descendants(victim.proc.pid)  # fork servers and workers
            victim.kill()
            # its workers die by their parent-death signal a moment after the daemon
            # (sooner or later, with the cores busy); "stopped" is when none is left

            async def tree_gone() -> bool:
                return not any(_alive(pid) for pid in tree)

            await wait_until(tree_gone, 10, "the killed replica's workers to die")
        stopped_at = time.time()
        await work.wait_done(120)
        lines = read_ledger(work.ledger)
        # the others go on from the moment the victim is told to stop (on a busy machine
        # they may finish everything while it drains), and it does nothing once stopped
        assert [x for x in lines if x["t"] > stopping_at and x["who"] != "r0"], (
            "the surviving replicas did no work once the victim was stopping"
        )
        assert all(x["who"] != "r0" for x in lines if x["t"] > stopped_at)
    work.check_complete()
    return work, stopped_at


async def test_sigterm_one_replica_drains_and_others_take_over(
    tmp_path: Path, brokers: Brokers, client: aioredis.Redis
) -> None:
    work, _ = await _stop_one_mid_run(tmp_path, brokers, client, signal.SIGTERM)
    # A graceful stop finishes what it started and hands the rest over unprocessed.
    dupes, moto_dupes = duplicates(work.seen(), read_ledger(work.ledger))
    assert not any(dupes.values()), f"handled twice after a graceful stop: {dupes}"
    assert len(moto_dupes) <= len(work.expected["sqs"]) // 20, moto_dupes


async def test_sigkill_one_replica_loses_nothing(
    tmp_path: Path, brokers: Brokers, client: aioredis.Redis
) -> None:
    work, killed_at = await _stop_one_mid_run(tmp_path, brokers, client, signal.SIGKILL)
    # Duplicates only for what the killed replica had in flight: the victim handled it
    # before it died and one survivor again after, never two handlings otherwise.
    lines = read_ledger(work.ledger)
    dupes, moto_dupes = duplicates(work.seen(), lines)
    for kind, items in dupes.items():
        for item in items:
            runs = [x for x in lines if x["kind"] == kind and x["id"] == item]
            by_victim = [x for x in runs if x["who"] == "r0"]
            others = [x for x in runs if x["who"] != "r0"]
            assert len(by_victim) == 1, (kind, runs)
            assert len(others) == 1, (kind, runs)
            assert others[0]["t0"] > killed_at - 0.5, (kind, runs)
    # and no more of them than the victim could have had in flight
    assert sum(map(len, dupes.values())) <= 3 * CONCURRENCY * BATCH, dupes
    assert len(moto_dupes) <= len(work.expected["sqs"]) // 20, moto_dupes


# -- 3. cron across restarts: missed ticks caught up once, up to catch_up -------------------


def write_cron_app(root: Path, redis_url: str, catch_up: int) -> Path:
    env = {"LEDGER": str(root / "ledger.jsonl"), "WHO": "${WHO:-}"}
    yaml = f"""
        server: {{host: 127.0.0.1}}
        store: {{url: "{redis_url}"}}
        shutdown_grace: 5s
        functions:
          tick:
            handler: ledger:tick
            runtime: inline
            concurrency: 2
            environment: {json.dumps(env)}
            triggers:
              - cron: {{schedule: "rate(1 second)", catch_up: {catch_up}}}
    """
    return write_app(root, yaml, {"ledger.py": HANDLERS.replace("def tick", "async def tick")})


async def test_missed_ticks_are_caught_up_once_across_replicas(
    tmp_path: Path, redis_url: str
) -> None:
    catch_up = 3
    config = write_cron_app(tmp_path, redis_url, catch_up)
    with replicas(config) as first:
        first[0].wait_for(lambda e: e.get("event") == "cron.fired", 30)
    down_from = time.time()
    await anyio.sleep(8)  # every replica is down: ~8 ticks are missed
    with replicas(config) as second:
        up_at = time.time()

        async def caught_up() -> bool:
            fired = [e for d in second for e in d.events("cron.fired")]
            dropped = any(d.events("cron.ticks_dropped") for d in second)
            return dropped and any(_epoch(e["scheduled_at"]) < up_at - 1 for e in fired)

        await wait_until(caught_up, 30, "the second replicas to catch up the missed ticks")
    fired = [e for d in first + second for e in d.events("cron.fired")]
    per_tick = Counter(int(_epoch(e["scheduled_at"])) for e in fired)
    assert all(n == 1 for n in per_tick.values()), [t for t, n in per_tick.items() if n > 1]
    missed = [t for t in per_tick if down_from + 1 < t < up_at - 1]
    # the gap was ~8 s long; only the latest `catch_up` ticks before a restart fire
    assert 1 <= len(missed) <= catch_up + 1, sorted(missed)
    dropped = [e for d in second for e in d.events("cron.ticks_dropped")]
    assert dropped, "older missed ticks are dropped and said so"


def test_cron_claims_outlive_the_catch_up_window() -> None:
    """A tick's claim lasts as long as a restarting replica could still catch it up, plus a
    minute of clock skew: a replica that fired it and died cannot make it fire again."""
    from types import SimpleNamespace

    from eventrun.abc import SourceSpec
    from eventrun.sources import cron

    for schedule, catch_up, period in (("rate(1 minute)", 5, 60), ("rate(1 second)", 3, 1)):
        cfg = SimpleNamespace(schedule=schedule, catch_up=catch_up, timezone="UTC")
        spec = SourceSpec(
            kind="cron",
            name="f/cron[0]",
            function="f",
            config=cfg,
            connection=None,
            config_dir=Path("."),
        )
        source = cron.create(spec)
        assert isinstance(source, cron.CronSource)
        assert source.claim_ttl_s >= catch_up * period + 60
