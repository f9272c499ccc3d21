"""eventrun.testing's in-memory stream, queue and sink: the semantics tests rely on."""

from __future__ import annotations

import anyio

from eventrun.abc import OutMessage
from eventrun.testing import MemoryQueue, MemorySink, MemoryStream


async def test_stream_restart_rewinds_to_the_committed_position() -> None:
    async with MemoryStream() as stream:
        for n in range(4):
            stream.put("s", b"%d" % n)
        first = await stream.poll(2)
        await stream.ack(first[:1])  # only offset 0 is committed
        rest = await stream.poll(10)
        assert [r.data for r in rest] == [b"2", b"3"]
        stream.restart()  # a consumer restart: offsets 1.. are read again
        again = await stream.poll(10)
        assert [r.item_id for r in again] == ["1", "2", "3"]
        assert stream.statistics() == {}
    assert stream.lag() == 3


async def test_queue_poll_returns_at_most_max_records() -> None:
    async with MemoryQueue(clock=lambda: 100.0) as queue:
        ids = [queue.send(b"%d" % n) for n in range(5)]
        got = await queue.poll(2)
        assert [r.item_id for r in got] == ids[:2]
        more = await queue.poll(10)  # the first two are invisible now
        assert [r.item_id for r in more] == ids[2:]


async def test_sink_wait_for_returns_once_enough_messages_arrived() -> None:
    sink = MemorySink()
    async with sink, anyio.create_task_group() as tg:
        done = anyio.Event()

        async def waiter() -> None:
            await sink.wait_for(2)
            done.set()

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        await sink.send([OutMessage(b"1")])
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set()  # one of two
        await sink.send([OutMessage(b"2")])
        with anyio.fail_after(5):
            await done.wait()
    assert [m.payload for m in sink.messages] == [b"1", b"2"]
