"""The RabbitMQ poller against a real broker, alone and under the real dispatcher:
ack exactly what it is told, release and redeliver with delivery counts, order and
completeness over thousands of messages, a poison message to on_failure, a broker
restart mid-run."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from rabbitmq_kit import (
    Collector,
    RmqHandler,
    declare,
    poll_until,
    poller,
    publish,
    ready_count,
    settings_of,
)
from rabbitmq_server import RabbitServer

from eventrun.exceptions import SourceError, SourceUnavailable
from eventrun_rabbitmq.source import RETURN_GRACE_S
from tests._dispatch_kit import running

pytestmark = pytest.mark.rabbitmq


def bodies(n: int, prefix: str = "m") -> list[bytes]:
    return [f"{prefix}{i:06d}".encode() for i in range(n)]


async def test_ack_covers_exactly_the_given_records(rabbit_url: str, queue_name: str) -> None:
    await declare(rabbit_url, queue_name)
    await publish(rabbit_url, queue_name, bodies(10))
    async with poller(rabbit_url, queue_name, batch_size=10) as p:
        records: list = []
        with anyio.fail_after(10):
            while len(records) < 10:
                records += await p.poll(10 - len(records))
        # 0-2 and 5 acknowledged: one multiple ack up to 2, a single ack for 5; 3 and 4
        # are neither, so nothing may cover them
        await p.ack([records[i] for i in (0, 1, 2, 5)])
        await p.ack([records[9]])
        assert p.statistics()["unacked"] == 5
    assert await ready_count(rabbit_url, queue_name) == 5
    async with poller(rabbit_url, queue_name) as p:
        again: list = []
        with anyio.fail_after(10):
            while len(again) < 5:
                again += await p.poll(10)
        assert [r.data for r in again] == [b"m%06d" % i for i in (3, 4, 6, 7, 8)]
        assert all(r.event.redelivered for r in again)


async def test_release_with_delay_holds_then_requeues_and_counts(
    rabbit_url: str, queue_name: str
) -> None:
    """Classic queue: the poller counts failed deliveries itself."""
    await declare(rabbit_url, queue_name)
    await publish(rabbit_url, queue_name, bodies(3), ids=["a", "b", "c"])
    async with poller(rabbit_url, queue_name) as p:
        first: list = []
        with anyio.fail_after(10):
            while len(first) < 3:
                first += await p.poll(10)
        assert [r.attempt for r in first] == [1, 1, 1]
        await p.ack([first[0], first[2]])
        released_at = anyio.current_time()
        await p.release([first[1]], 0.6)
        assert p.statistics()["held"] == 1
        again: list = []
        with anyio.fail_after(10):
            while not again:
                again = list(await p.poll(10))
        assert anyio.current_time() - released_at >= 0.5
        assert [(r.item_id, r.attempt, r.event.redelivered) for r in again] == [("b", 2, True)]
        await p.release(again, 0.01)
        third: list = []
        with anyio.fail_after(10):
            while not third:
                third = list(await p.poll(10))
        assert third[0].attempt == 3
        await p.ack(third)
    assert await ready_count(rabbit_url, queue_name) == 0


async def test_a_held_retry_does_not_block_the_queue(rabbit_url: str, queue_name: str) -> None:
    await declare(rabbit_url, queue_name)
    await publish(rabbit_url, queue_name, [b"slow"], ids=["s"])
    async with poller(rabbit_url, queue_name) as p:
        first: list = []
        with anyio.fail_after(10):
            while not first:
                first = list(await p.poll(10))
        await p.release(first, 30.0)  # a long backoff
        await publish(rabbit_url, queue_name, [b"a", b"b"], ids=["a", "b"])
        later: list = []
        with anyio.fail_after(10):
            while len(later) < 2:
                later += await p.poll(10)
        assert [r.data for r in later] == [b"a", b"b"]
        await p.ack(later)
        assert p.statistics()["held"] == 1
    assert await ready_count(rabbit_url, queue_name) == 1  # the held one, back on close


async def test_release_without_delay_is_not_a_failed_attempt(
    rabbit_url: str, queue_name: str
) -> None:
    """A shutdown's release: left to the channel close, or rejected after the grace."""
    await declare(rabbit_url, queue_name)
    await publish(rabbit_url, queue_name, [b"x"], ids=["only"])
    async with poller(rabbit_url, queue_name) as p:
        first: list = []
        with anyio.fail_after(10):
            while not first:
                first = list(await p.poll(10))
        released_at = anyio.current_time()
        await p.release(first, 0)
        again: list = []
        with anyio.fail_after(RETURN_GRACE_S + 10):
            while not again:
                again = list(await p.poll(10))
        assert anyio.current_time() - released_at >= RETURN_GRACE_S - 0.5
        assert (again[0].attempt, again[0].event.redelivered) == (1, True)
        await p.release(again, 0)
    # closed with the delivery held: the broker has it back at once
    assert await ready_count(rabbit_url, queue_name) == 1


async def test_quorum_queue_attempts_come_from_x_delivery_count(
    rabbit_url: str, queue_name: str
) -> None:
    await declare(rabbit_url, queue_name, quorum=True)
    await publish(rabbit_url, queue_name, [b"x"])  # no message id: counted by the broker
    async with poller(rabbit_url, queue_name) as p:
        for expected in (1, 2, 3):
            got: list = []
            with anyio.fail_after(10):
                while not got:
                    got = list(await p.poll(10))
            assert got[0].attempt == expected
            if expected < 3:
                await p.release(got, 0.01)
        headers = got[0].event.basic_properties.headers
        assert headers["x-delivery-count"] == 2
        await p.ack(got)


async def test_missing_queue_is_a_source_error_naming_it(rabbit_url: str, queue_name: str) -> None:
    with pytest.raises(SourceError, match=queue_name):
        async with poller(rabbit_url, queue_name):
            pass


async def test_wrong_password_is_refused(rabbit: RabbitServer, queue_name: str) -> None:
    rabbit.start()
    url = rabbit.url.replace("guest:guest", "guest:wrong")
    with pytest.raises(SourceError) as info:
        async with poller(url, queue_name):
            pass
    assert "wrong" not in str(info.value)


async def test_thousands_in_order_and_all_acked(rabbit_url: str, queue_name: str) -> None:
    n = 5000
    await declare(rabbit_url, queue_name)
    await publish(rabbit_url, queue_name, bodies(n))
    handler = RmqHandler()
    p = poller(rabbit_url, queue_name, batch_size=100, maximum_batching_window=0.05)
    async with p, running(p, handler, **settings_of(p)) as dispatcher:
        await poll_until(lambda: dispatcher.stats.acked >= n, 60, f"{n} acks")
    assert handler.handled() == [f"m{i:06d}" for i in range(n)]
    assert max(len(c) for c in handler.calls) == 100
    assert await ready_count(rabbit_url, queue_name) == 0


async def test_parallel_batches_complete_out_of_order_and_ack_exactly(
    rabbit_url: str, queue_name: str
) -> None:
    """maximum_concurrency 4: batches finish out of delivery order, so acks mix multiple
    and single ones; every message is handled once and acked, none twice."""
    n = 2000
    await declare(rabbit_url, queue_name)
    await publish(rabbit_url, queue_name, bodies(n))
    delays = iter([0.03, 0.0, 0.01, 0.02] * n)

    class Jittery(RmqHandler):
        async def __call__(self, payload: bytes, *, event: object = None):  # type: ignore[override]
            await anyio.sleep(next(delays))
            return await RmqHandler.__call__(self, payload)

    handler = Jittery()
    p = poller(rabbit_url, queue_name, batch_size=25, maximum_concurrency=4)
    async with p, running(p, handler, **settings_of(p)) as dispatcher:
        await poll_until(lambda: dispatcher.stats.acked >= n, 60, f"{n} acks")
        await poll_until(lambda: p.statistics()["unacked"] == 0, 10, "nothing unacked")
    handled = handler.handled()
    assert sorted(handled) == [f"m{i:06d}" for i in range(n)]
    assert handled != sorted(handled), "the batches never overlapped"
    assert await ready_count(rabbit_url, queue_name) == 0


@pytest.mark.parametrize("quorum", [False, True], ids=["classic", "quorum"])
async def test_poison_message_goes_to_on_failure_after_its_retries(
    rabbit_url: str, queue_name: str, quorum: bool
) -> None:
    n = 1000
    await declare(rabbit_url, queue_name, quorum=quorum)
    ids = [f"id-{i}" for i in range(n)]
    await publish(rabbit_url, queue_name, bodies(n), ids=ids)
    poison = "m000123"
    succeeded: Counter[str] = Counter()

    def fn(messages: list[dict]) -> dict:
        failures = []
        for m in messages:
            if m["id"] == poison:
                failures.append({"itemIdentifier": m["props"]["messageId"]})
            else:
                succeeded[m["id"]] += 1
        return {"batchItemFailures": failures}

    handler = RmqHandler(fn)
    dlq = Collector()
    p = poller(
        rabbit_url,
        queue_name,
        batch_size=50,
        maximum_retry_attempts=2,
        report_batch_item_failures=True,
    )
    async with p, running(p, handler, on_failure=dlq, **settings_of(p)) as dispatcher:
        await poll_until(lambda: dispatcher.stats.acked >= n, 60, "every message settled")
    assert sorted(succeeded) == [f"m{i:06d}" for i in range(n) if f"m{i:06d}" != poison]
    assert set(succeeded.values()) == {1}
    assert handler.handled().count(poison) == 3  # the first delivery and two retries
    (doc,) = dlq.documents()
    assert doc["requestContext"]["condition"] == "RetryAttemptsExhausted"
    (failed,) = doc["payload"]["rmqMessagesByQueue"][f"{queue_name}::/"]
    assert failed["basicProperties"]["messageId"] == "id-123"
    assert doc["RabbitMQBatchInfo"]["messageIds"] == ["id-123"]
    assert await ready_count(rabbit_url, queue_name) == 0


async def test_broker_restart_mid_run_loses_nothing(rabbit: RabbitServer, queue_name: str) -> None:
    n = 3000
    rabbit.start()
    await declare(rabbit.url, queue_name)
    await publish(rabbit.url, queue_name, bodies(n))
    handler = RmqHandler(delay_s=0.01)
    p = poller(rabbit.url, queue_name, batch_size=50, maximum_batching_window=0)
    async with p, running(p, handler, **settings_of(p)) as dispatcher:
        await poll_until(lambda: len(handler.handled()) >= n // 3, 60, "a third handled")
        await anyio.to_thread.run_sync(rabbit.restart)
        await poll_until(
            lambda: set(handler.handled()) >= {f"m{i:06d}" for i in range(n)}, 90, "all handled"
        )
        await poll_until(lambda: p.statistics()["unacked"] == 0, 30, "acks after the restart")
        assert dispatcher.stats.poll_errors >= 1
    assert await ready_count(rabbit.url, queue_name) == 0


async def test_poll_while_broker_down_is_unavailable(rabbit: RabbitServer, queue_name: str) -> None:
    rabbit.start()
    await declare(rabbit.url, queue_name)
    async with poller(rabbit.url, queue_name) as p:
        await anyio.to_thread.run_sync(rabbit.stop)
        try:
            with anyio.fail_after(10):
                while True:  # buffered nothing: the loss shows within a poll or two
                    try:
                        await p.poll(10)
                    except SourceUnavailable:
                        break
            with pytest.raises(SourceUnavailable):
                await p.poll(10)  # reconnecting fails while it is down
        finally:
            await anyio.to_thread.run_sync(rabbit.start)
        with anyio.fail_after(10):
            assert list(await p.poll(10)) == []
