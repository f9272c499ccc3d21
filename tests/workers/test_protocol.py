"""Framing: round trips, and garbage that must raise FrameError/ChannelClosed, not crash."""

from __future__ import annotations

import socket
import struct
import threading

import anyio
import anyio.to_thread
import pytest

from eventrun.workers._channel import Channel
from eventrun.workers._protocol import (
    MAX_FRAME_BYTES,
    ChannelClosed,
    FrameError,
    FrameReader,
    Invoke,
    Result,
    decode_from_daemon,
    decode_from_worker,
    encode,
    recv_frame_blocking,
)


async def test_round_trip_over_a_socketpair() -> None:
    await _round_trip()


def test_round_trip_on_uvloop() -> None:
    """The daemon runs on uvloop, whose transports differ from asyncio's own."""
    anyio.run(_round_trip, backend_options={"use_uvloop": True})


async def test_send_to_a_dead_worker_is_channel_closed() -> None:
    mine, theirs = socket.socketpair()
    channel = await Channel.open(mine)
    theirs.close()
    with pytest.raises(ChannelClosed), anyio.fail_after(5):
        await channel.receive()
    with pytest.raises(ChannelClosed):
        await channel.send(encode(Invoke("r", b"{}", 1.0)))
    channel.close()
    channel.close()  # twice is fine


async def _round_trip() -> None:
    mine, theirs = socket.socketpair()
    channel = await Channel.open(mine)
    try:
        big = b'{"k": "' + b"x" * 3_000_000 + b'"}'
        msg = Invoke("r1", big, 12.5, {"custom": {}}, None)
        received: list[bytes] = []

        async def read() -> None:
            received.append(await anyio.to_thread.run_sync(recv_frame_blocking, theirs))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await channel.send(encode(msg))  # larger than the socket buffer
        assert decode_from_daemon(received[0]) == msg
        result = Result("r1", True, b"null", None, b"out", 0.1, 30)
        theirs.sendall(encode(result))
        assert decode_from_worker(await channel.receive()) == result
    finally:
        channel.close()
        theirs.close()


async def test_truncated_frame_is_channel_closed() -> None:
    mine, theirs = socket.socketpair()
    channel = await Channel.open(mine)
    theirs.sendall(encode(Result("r", True, b"1", None, b"", 0.0, 1))[:-3])
    theirs.close()
    with pytest.raises(ChannelClosed):
        await channel.receive()
    channel.close()


async def test_oversized_header_is_frame_error() -> None:
    mine, theirs = socket.socketpair()
    channel = await Channel.open(mine)
    theirs.sendall(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameError):
        await channel.receive()
    channel.close()
    theirs.close()


@pytest.mark.parametrize("body", [b"\xc1", b"\x93\x01\x02\x03", encode(Invoke("r", b"", 0))[4:]])
def test_undecodable_or_wrong_message_is_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        decode_from_worker(body)


def _frames(*bodies: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(b)) + b for b in bodies)


def test_frame_reader_takes_frames_however_they_are_cut() -> None:
    """Whole frames, several in one send, a header split in two, a body larger than one
    recv: the worker's reader returns exactly the bodies sent, in order."""
    mine, theirs = socket.socketpair()
    big = b"y" * 1_500_000
    wire = _frames(b"one", b"two", b"", big, b"last")
    cuts = [2, 5, 11, 30, 700_000, len(wire)]  # mid-header, mid-body, several frames
    reader = FrameReader(theirs)
    got: list[bytes] = []

    def write() -> None:
        start = 0
        for cut in cuts:
            mine.sendall(wire[start:cut])
            start = cut
        mine.close()

    writer = threading.Thread(target=write)
    writer.start()
    for _ in range(5):
        got.append(reader.next())
    with pytest.raises(ChannelClosed):
        reader.next()
    writer.join(10)
    theirs.close()
    assert got == [b"one", b"two", b"", big, b"last"]


def test_frame_reader_eof_mid_frame_and_bad_header() -> None:
    mine, theirs = socket.socketpair()
    mine.sendall(_frames(b"whole") + struct.pack(">I", 10) + b"part")
    mine.close()
    reader = FrameReader(theirs)
    assert reader.next() == b"whole"
    with pytest.raises(ChannelClosed):
        reader.next()
    theirs.close()
    mine, theirs = socket.socketpair()
    mine.sendall(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameError):
        FrameReader(theirs).next()
    mine.close()
    theirs.close()


async def test_channel_receive_splits_frames_that_arrive_together_or_in_pieces() -> None:
    """Two results in one chunk, then one whose header and body come separately."""
    mine, theirs = socket.socketpair()
    channel = await Channel.open(mine)
    try:
        first = Result("r1", True, b"1", None, b"", 0.0, 1)
        second = Result("r2", True, b"2", None, b"", 0.0, 1)
        theirs.sendall(encode(first) + encode(second))
        with anyio.fail_after(5):
            assert decode_from_worker(await channel.receive()) == first
            assert decode_from_worker(await channel.receive()) == second
            third = encode(Result("r3", False, b"3", "E", b"out", 0.5, 2))

            async def dribble() -> None:
                for piece in (third[:3], third[3:6], third[6:]):
                    await anyio.sleep(0.01)
                    theirs.sendall(piece)

            async with anyio.create_task_group() as tg:
                tg.start_soon(dribble)
                message = decode_from_worker(await channel.receive())
        assert isinstance(message, Result)
        assert message.request_id == "r3"
    finally:
        channel.close()
        theirs.close()
