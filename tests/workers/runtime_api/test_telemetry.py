"""Telemetry log frames turned back into text, mixed with plain output."""

from __future__ import annotations

import time

from eventrun.workers._rapi_telemetry import unframe


def frame(message: bytes, kind: int = 0xA55A0003 | 12) -> bytes:
    stamp = int(time.time() * 1e6).to_bytes(8, "big")
    return kind.to_bytes(4, "big") + len(message).to_bytes(4, "big") + stamp + message


def test_plain_output_is_untouched() -> None:
    data = "plain ¥Z text\n".encode()  # ¥Z is C2 A5 5A: the magic's bytes, not a frame
    assert unframe(data) == data


def test_frames_between_plain_output_keep_their_order() -> None:
    data = b"before\n" + frame(b"one\ntwo\n") + b"between\n" + frame(b"json", 0xA55A0002) + b"x"
    assert unframe(data) == b"before\none\ntwo\nbetween\njson\nx"


def test_a_truncated_frame_is_left_as_is() -> None:
    cut = frame(b"cut short")[:-3]
    assert unframe(frame(b"complete") + cut) == b"complete\n" + cut
