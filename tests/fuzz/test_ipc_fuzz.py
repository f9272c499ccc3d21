"""IPC framing under random input (extends tests/workers/test_protocol.py's fixed cases).

1. The daemon-side frame decoder and :class:`Channel` fed random bytes, random headers
   and truncated frames raise only FrameError / ChannelClosed, never anything else.
2. A real worker process whose handler writes random bytes (or a truncated frame) onto
   its own IPC socket and dies: the invocation is a crash *result*
   (``Runtime.ExitError``), never an exception in the daemon, and the pool keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from eventrun.workers import ProcessRunner
from eventrun.workers._channel import Channel
from eventrun.workers._protocol import (
    MAX_FRAME_BYTES,
    ChannelClosed,
    FrameError,
    decode_from_daemon,
    decode_from_worker,
)
from tests._hypothesis import examples
from tests.workers.conftest import Settings

EXAMPLES = {"decoder": examples(500), "channel": examples(200), "worker": examples(25)}
GARBLER = """
import contextlib
import json
import os
import stat
import sys


def _ipc_socket():
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass
    raise RuntimeError("no IPC socket")


def handler(event, context):
    if event.get("garbage") is not None:
        os.write(_ipc_socket(), bytes.fromhex(event["garbage"]))
        sys.stdout.flush()
        os._exit(0)
    return {"ok": event.get("n")}
"""


@settings(max_examples=EXAMPLES["decoder"], deadline=None)
@given(st.binary(max_size=256))
@example(b"\x91\xa1\x80")  # a msgpack str that is not UTF-8: msgspec raised UnicodeDecodeError
@example(b"\x96\xa6result\xa1\xff\xc3\xc4\x00\xc0\xcb\x00\x00\x00\x00\x00\x00\x00\x00")
def test_frame_decoders_raise_only_frame_error(body: bytes) -> None:
    for decode in (decode_from_worker, decode_from_daemon):
        with contextlib.suppress(FrameError):
            decode(body)


def _frames() -> st.SearchStrategy[bytes]:
    honest_header = st.binary(max_size=64).map(lambda b: struct.pack(">I", len(b)) + b)
    lying_header = st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=64)).map(
        lambda t: struct.pack(">I", t[0]) + t[1]
    )
    return st.one_of(st.binary(max_size=80), honest_header, lying_header)


@settings(
    max_examples=EXAMPLES["channel"],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(_frames())
def test_channel_receive_on_random_bytes(data: bytes) -> None:
    async def receive_all() -> None:
        mine, theirs = socket.socketpair()
        channel = await Channel.open(mine)
        theirs.sendall(data)
        theirs.close()  # EOF after the garbage: a receive never blocks forever
        try:
            with anyio.fail_after(5):
                while True:
                    decode_from_worker(await channel.receive())
        except (FrameError, ChannelClosed):
            pass
        finally:
            channel.close()
            await anyio.lowlevel.checkpoint()  # the transport closes its socket on the loop

    anyio.run(receive_all)


def test_channel_rejects_lengths_over_the_limit() -> None:
    async def main() -> None:
        mine, theirs = socket.socketpair()
        channel = await Channel.open(mine)
        theirs.sendall(struct.pack(">I", MAX_FRAME_BYTES + 1) + b"x" * 100)
        with pytest.raises(FrameError):
            await channel.receive()
        channel.close()
        theirs.close()
        await anyio.lowlevel.checkpoint()

    anyio.run(main)


@pytest.fixture
def garbler_dir(tmp_path: Path) -> Path:
    (tmp_path / "garbler.py").write_text(GARBLER)
    return tmp_path


async def test_real_worker_writing_garbage_is_a_crash_result(garbler_dir: Path) -> None:
    """Random bytes, random headers and truncated frames from a real worker."""
    cases: list[bytes] = []

    @settings(max_examples=EXAMPLES["worker"], deadline=None, database=None)
    @given(_frames())
    def collect(data: bytes) -> None:
        cases.append(data)

    collect()
    cases += [
        b"",
        b"\x00\x00",
        struct.pack(">I", 10) + b"abc",
        struct.pack(">I", 2**31),
        struct.pack(">I", 3) + b"\x91\xa1\x80",  # framed, but not UTF-8 where a str goes
    ]
    runner = ProcessRunner(
        "garbler",
        Settings(handler="garbler.handler", timeout=5.0, concurrency=1, min_warm=1),
        config_dir=garbler_dir,
        fork_server=True,
    )
    outcomes: dict[str, int] = {}
    with capture_logs() as logs, anyio.fail_after(60):
        async with runner:
            for n, data in enumerate(cases):
                bad = await runner.invoke(json.dumps({"garbage": data.hex()}).encode())
                assert not bad.ok
                assert bad.error_type == "Runtime.ExitError", bad
                good = await runner.invoke(json.dumps({"n": n}).encode())
                assert good.ok, good
                assert json.loads(good.payload) == {"ok": n}
    garbled = sum(1 for e in logs if e["event"] == "worker.protocol_error")
    # The garbage really reached the daemon's decoder: most cases are undecodable frames
    # (the rest are truncated frames or nothing at all, seen as the worker's exit).
    assert garbled >= len(cases) // 3, garbled
    outcomes = {"protocol_error": garbled, "exit_or_truncated": len(cases) - garbled}
    print(f"ipc fuzz: {len(cases)} garbage frames from a real worker, outcomes {outcomes}")
