"""ReadState against a real Redis: what a re-read of the pending entries may hand out."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from eventrun.brokers.redis import execute_packed, make_client
from eventrun.sources.redis_streams._reads import ReadState
from eventrun.sources.redis_streams._records import EntryBuilder

pytestmark = pytest.mark.redis


def _state() -> ReadState:
    builders = {"s1": EntryBuilder("s1", "127.0.0.1:0/0", "us-east-1", None)}
    return ReadState(["s1"], "g", "c1", builders)


async def test_pel_reread_skips_entries_whose_xack_completes_meanwhile(redis_url: str) -> None:
    """An XACK may complete between a PEL read and the filtering of its reply (two pooled
    connections, no ordering between them): its entries, listed in the reply, must not
    be handed out a second time."""
    client = make_client(redis_url, read_timeout_s=5)
    try:
        await client.execute_command("XGROUP", "CREATE", "s1", "g", "0", "MKSTREAM")
        for i in range(4):
            await client.execute_command("XADD", "s1", "*", "data", str(i))
        state = _state()
        records = await state.read_new(client, 10, 100)
        assert len(records) == 4
        state.settle(records, acked=True)  # handled: XACK queued
        state.recover_all()
        seen = state._settling(["s1"])  # what read_pending snapshots before its read
        reply = await client.execute_command(
            "XREADGROUP", "GROUP", "g", "c1", "COUNT", 10, "STREAMS", "s1", "0"
        )
        pending = await client.execute_command("XPENDING", "s1", "g", "-", "+", 10, "c1")
        await state.flush_acks(client)  # the XACK lands before the reply is filtered
        assert state.ack_backlog() == 0
        entries_of = {raw.decode(): entries for raw, entries in reply}
        assert len(entries_of["s1"]) == 4  # the reply still lists the acked entries
        assert state._pel_records(["s1"], entries_of, [pending], 10, seen) == []
        # without the snapshot the same reply would deliver all four again
        state.recover_all()
        fresh = {"s1": set[bytes]()}
        assert len(state._pel_records(["s1"], entries_of, [pending], 10, fresh)) == 4
    finally:
        await client.aclose()


async def test_execute_packed_runs_a_command_and_reports_server_errors(redis_url: str) -> None:
    client = make_client(redis_url, read_timeout_s=5)
    try:
        await client.execute_command("XADD", "s1", "*", "data", "x")
        await client.execute_command("XGROUP", "CREATE", "s1", "g", "0")
        [[_, [(entry_id, _)]]] = await client.execute_command(
            "XREADGROUP", "GROUP", "g", "c1", "COUNT", 1, "STREAMS", "s1", ">"
        )
        assert await execute_packed(client, "XACK", "s1", "g", entry_id, b"0-1") == 1
        with pytest.raises(ResponseError):
            await execute_packed(client, "XACK", "s1")  # wrong number of arguments
        # the connection went back to the pool in a usable state
        assert await execute_packed(client, "XLEN", "s1") == 1
    finally:
        await client.aclose()
