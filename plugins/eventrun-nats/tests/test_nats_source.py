"""The NATS poller against a real ``nats-server -js``, driven by the real dispatcher."""

from __future__ import annotations

import base64
import json

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats_kit import (
    Collector,
    Ledger,
    body,
    consumer_state,
    make_stream,
    publish,
    spec,
    wait_settled,
)
from nats_server import NatsServer

from eventrun.exceptions import SourceError
from eventrun_nats.source import NatsPoller
from tests._dispatch_kit import running


async def test_event_shape(nats_server: NatsServer, nc: Client, stream_name: str) -> None:
    await make_stream(nc, stream_name)
    js = nc.jetstream()
    await js.publish(f"{stream_name}.a", b'{"n": 1}', headers={"Trace-Id": "t1"})
    await js.publish(f"{stream_name}.b", b"\x00\xffraw")
    async with NatsPoller(spec(nats_server.url, stream_name)) as poller:
        records = await poller.poll(10)
        assert [r.shard for r in records] == [f"{stream_name}.a", f"{stream_name}.b"]
        assert [r.item_id for r in records] == [1, 2]
        assert [r.attempt for r in records] == [1, 1]
        event = json.loads(msgspec.json.encode(poller.batch_event(records)))
        assert event["eventSource"] == "nats:jetstream"
        assert event["eventSourceArn"] == f"{nats_server.url}/{stream_name}/fn"
        first, second = event["records"]
        assert set(first) == {
            "subject", "data", "headers", "stream", "consumer", "streamSequence",
            "consumerSequence", "deliveredCount", "timestamp",
        }  # fmt: skip
        assert first["subject"] == f"{stream_name}.a"
        assert base64.b64decode(first["data"]) == b'{"n": 1}'
        assert first["headers"] == {"Trace-Id": "t1"}
        assert (first["stream"], first["consumer"]) == (stream_name, "fn")
        assert (first["streamSequence"], first["consumerSequence"]) == (1, 1)
        assert first["deliveredCount"] == 1
        assert abs(first["timestamp"] / 1000 - records[0].timestamp) < 0.001
        assert second["headers"] is None
        assert base64.b64decode(second["data"]) == b"\x00\xffraw"
        info = poller.batch_info(records)["NATSBatchInfo"]
        assert info["startSequence"] == 1
        assert info["endSequence"] == 2
        assert info["batchSize"] == 2
        await poller.ack(records[:1])
        await poller.release(records[1:], 0.0)
        again = await poller.poll(10)
        assert [(r.item_id, r.attempt) for r in again] == [(2, 2)]
        await poller.ack(again)
    state = await consumer_state(nc, stream_name)
    assert (state.num_pending, state.num_ack_pending, state.num_redelivered) == (0, 0, 0)


async def test_missing_stream_is_a_clear_error(nats_server: NatsServer) -> None:
    with pytest.raises(SourceError, match=r"stream 'NOPE' does not exist.*nats stream add"):
        async with NatsPoller(spec(nats_server.url, "NOPE")):
            pass


async def test_order_and_completeness_per_subject(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    await make_stream(nc, stream_name)
    await publish(nc, stream_name, 4000, subjects=8)
    ledger = Ledger()
    async with (
        NatsPoller(spec(nats_server.url, stream_name)) as poller,
        running(poller, ledger, batch_size=50, window_s=0.01, share_events=False),
    ):
        await ledger.wait_for(lambda: len(ledger.handled) >= 4000)
        await wait_settled(nc, stream_name)
    assert sorted(ledger.ids()) == list(range(4000))
    assert max(ledger.ids().values()) == 1
    for subject, seqs in ledger.per_subject().items():
        assert seqs == list(range(500)), subject
    # a batch holds one subject: the dispatcher's lane per subject
    assert all(len({r["subject"] for r in e["records"]}) == 1 for e in ledger.events)


async def test_subject_lanes_keep_order_per_subject(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    """16 subjects hashed onto 3 lanes: batches mix subjects, each subject stays in order."""
    await make_stream(nc, stream_name)
    await publish(nc, stream_name, 1600, subjects=16)
    ledger = Ledger()
    async with (
        NatsPoller(spec(nats_server.url, stream_name, subject_lanes=3)) as poller,
        running(poller, ledger, batch_size=40),
    ):
        await ledger.wait_for(lambda: len(ledger.handled) >= 1600)
        await wait_settled(nc, stream_name)
    assert sorted(ledger.ids()) == list(range(1600))
    for subject, seqs in ledger.per_subject().items():
        assert seqs == list(range(100)), subject
    assert any(len({r["subject"] for r in e["records"]}) > 1 for e in ledger.events)


async def test_poison_goes_to_on_failure_after_retries(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    await make_stream(nc, stream_name)
    await publish(nc, stream_name, 400, subjects=4)
    ledger = Ledger(poison=lambda b: b["id"] == 101)
    failures = Collector()
    async with (
        NatsPoller(spec(nats_server.url, stream_name)) as poller,
        running(
            poller,
            ledger,
            on_failure=failures,
            batch_size=10,
            max_retry_attempts=2,
            report_batch_item_failures=True,
            bisect=True,
        ),
    ):
        await ledger.wait_for(lambda: len(ledger.handled) >= 399)
        await wait_settled(nc, stream_name)
    ids = ledger.ids()
    assert sorted(ids) == [i for i in range(400) if i != 101]
    assert max(ids.values()) == 1
    for subject, seqs in ledger.per_subject().items():
        assert seqs == [s for s in range(100) if (s * 4 + int(subject[-1])) != 101], subject
    [doc] = failures.docs()
    assert doc["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert doc["requestContext"]["approximateInvokeCount"] >= 3
    [failed] = doc["payload"]["records"]
    assert body(failed)["id"] == 101
    assert failed["deliveredCount"] == 1  # retried in place, not redelivered
    assert doc["NATSBatchInfo"]["subjects"] == [f"{stream_name}.s1"]


async def test_poison_queue_contract_nak_then_on_failure(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    """ordering: none: a failed message is nak'd with the backoff delay and comes back
    from JetStream; at max_deliver deliveries it goes to on_failure and is acked."""
    await make_stream(nc, stream_name)
    await publish(nc, stream_name, 200, subjects=4)
    ledger = Ledger(poison=lambda b: b["id"] == 7, stop_at_poison=False)
    failures = Collector()
    poller = NatsPoller(spec(nats_server.url, stream_name, ordering="none", max_deliver=3))
    async with (
        poller,
        running(
            poller,
            ledger,
            on_failure=failures,
            batch_size=10,
            max_receive_count=3,
            report_batch_item_failures=True,
        ),
    ):
        await ledger.wait_for(lambda: len(ledger.handled) >= 199 and bool(failures.messages))
        await wait_settled(nc, stream_name)
    ids = ledger.ids()
    assert sorted(ids) == [i for i in range(200) if i != 7]
    [doc] = failures.docs()
    [failed] = doc["payload"]["records"]
    assert body(failed)["id"] == 7
    assert failed["deliveredCount"] == 3
    state = await consumer_state(nc, stream_name)
    assert state.num_redelivered == 0  # acked after on_failure: nothing left to redeliver


async def test_long_handler_kept_alive_with_in_progress(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    """A handler running three times ack_wait: in-progress acks keep JetStream from
    redelivering the batch (and the messages buffered behind it)."""
    await make_stream(nc, stream_name)
    await publish(nc, stream_name, 30, subjects=1)
    ledger = Ledger(delay_s=1.2)
    async with (
        NatsPoller(spec(nats_server.url, stream_name, ack_wait=1)) as poller,
        running(poller, ledger, batch_size=10),
    ):
        assert poller.heartbeat_interval_s == pytest.approx(0.5)
        await ledger.wait_for(lambda: len(ledger.handled) >= 30)
        await wait_settled(nc, stream_name)
    state = await consumer_state(nc, stream_name)
    assert state.num_redelivered == 0
    assert sorted(ledger.ids()) == list(range(30))
    assert {r["deliveredCount"] for r in ledger.handled} == {1}


async def test_shutdown_releases_unfinished_unacked(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    """A shutdown whose grace runs out during a handler acknowledges nothing of that batch
    (nor of what was buffered): all of it is nak'd and comes back at once."""
    await make_stream(nc, stream_name)
    await publish(nc, stream_name, 50, subjects=1)
    block = anyio.Event()
    ledger = Ledger(block=block)
    async with NatsPoller(spec(nats_server.url, stream_name)) as poller:
        async with running(poller, ledger, batch_size=10, grace_s=0.3):
            await ledger.wait_for(lambda: bool(ledger.events), timeout_s=10)
        block.set()
    assert ledger.handled == []  # the blocked handler never returned within the grace
    state = await consumer_state(nc, stream_name)
    assert state.ack_floor.stream_seq == 0  # nothing acknowledged
    ledger2 = Ledger()
    async with (
        NatsPoller(spec(nats_server.url, stream_name)) as poller,
        running(poller, ledger2, batch_size=10),
    ):
        # nak'd, not left to ack_wait (10 s)
        await ledger2.wait_for(lambda: len(ledger2.handled) >= 50, timeout_s=5)
    assert [body(r)["id"] for r in ledger2.handled] == list(range(50))
    assert {r["deliveredCount"] for r in ledger2.handled} == {2}


async def test_poll_idle_then_woken_then_consumer_gone(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    """An idle poll returns nothing after about a second; a message published while a
    poll waits is returned by it at once; a deleted consumer is SourceUnavailable."""
    await make_stream(nc, stream_name)
    async with NatsPoller(spec(nats_server.url, stream_name)) as poller:
        started = anyio.current_time()
        assert await poller.poll(10) == []
        assert 0.5 < anyio.current_time() - started < 3
        got: list[object] = []

        async def poll() -> None:
            got.extend(await poller.poll(10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await anyio.sleep(0.2)  # the poll's lingering request is open by now
            started = anyio.current_time()
            await nc.jetstream().publish(f"{stream_name}.late", b"{}")
        assert anyio.current_time() - started < 0.5
        assert [r.shard for r in got] == [f"{stream_name}.late"]  # type: ignore[attr-defined]
        await poller.ack(got)  # type: ignore[arg-type]
        await nc.jetstream().delete_consumer(stream_name, "fn")
        # a pull still open at the delete ends with 409 Consumer Deleted; a new one would
        # get 503 (no responders): either is an error of the poll
        with pytest.raises(SourceError, match="NATS"):
            await poller.poll(10)
