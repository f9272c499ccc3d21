"""Fair fetching for the Kafka source: share a poll between the assigned partitions.

aiokafka drains its prefetched records partition by partition (``getmany`` returns a
whole fetch of the first partition before it looks at the next), so with the runtime's
bounded buffer one partition would take all of it and the lanes of the others would
starve: 4 partitions with a 20 ms handler then ran at the speed of one.

:func:`fair_fetch` lets each partition have at most ``share`` records outstanding
(handed out, not yet acked): the buffer split evenly, never less than two batches, one
running and one filling (with one, a partition's acks lag its completions, so the
rooms left were a few records each and a 100-record poll took six ``getmany`` calls to
fill half). Partitions are visited from a rotating start with non-blocking
``getmany(tp)`` calls; when none within its share has records ready, one ``getmany``
over all partitions takes up to ``share`` records from whichever has some, waiting up
to ``wait_ms`` (work-conserving: a backlog still flows while the others are caught up).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["fair_fetch"]

Fetched = dict[TopicPartition, list[Any]]


async def fair_fetch(
    consumer: AIOKafkaConsumer,
    outstanding: Sequence[tuple[TopicPartition, int]],
    *,
    max_records: int,
    batch_size: int,
    turn: int,
    wait_ms: int,
) -> Fetched:
    """Up to ``max_records`` records; ``outstanding`` lists the assigned partitions with
    their records handed out and not yet acked; ``turn`` picks the first one visited."""
    count = len(outstanding)
    if count <= 1:
        got: Fetched = await consumer.getmany(timeout_ms=wait_ms, max_records=max_records)
        return got
    share = max(2 * batch_size, -(-(sum(n for _, n in outstanding) + max_records) // count))
    turn %= count
    rooms = [(tp, share - n) for tp, n in (*outstanding[turn:], *outstanding[:turn])]
    out: Fetched = {}
    left = max_records
    for tp, room in rooms:
        if room <= 0:
            continue
        got = await consumer.getmany(tp, max_records=min(room, left))
        messages = got.get(tp)
        if messages:
            out[tp] = messages
            left -= len(messages)
            if left <= 0:
                break
    if out:
        return out
    got = await consumer.getmany(
        *(tp for tp, _ in rooms), timeout_ms=wait_ms, max_records=min(left, share)
    )
    return got
