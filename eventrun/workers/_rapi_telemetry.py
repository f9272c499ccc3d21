"""The telemetry log descriptor both official interface clients write to when given one.

Lambda hands a runtime ``_LAMBDA_TELEMETRY_LOG_FD``; the Node and Python clients then
write each log record to it as a frame instead of printing it: 4 bytes of type
(``0xa55a0003`` text, ``0xa55a0002`` JSON, the level in the low bits), 4 bytes of
length, 8 bytes of timestamp (Unix microseconds), the message; big-endian. A record
keeps its line breaks (printed to stdout, Node turns them into ``\\r``).

eventrun passes the runtime's output file itself as that descriptor, so frames and
plain stdout/stderr land in one file in the order they were written; :func:`unframe`
turns the frames back into text. Without a frame in the output (the common case for
``provided`` runtimes) it returns its input untouched.
"""

from __future__ import annotations

__all__ = ["unframe"]

_MAGIC = b"\xa5\x5a"
_HEADER = 16


def _frame_at(data: bytes, at: int) -> int:
    """The message length of a frame starting at ``at``, or -1 if there is none."""
    if data[at : at + 2] != _MAGIC or len(data) < at + _HEADER or data[at + 2] != 0:
        return -1
    if data[at + 3] & 0x03 not in (0x02, 0x03):
        return -1
    length = int.from_bytes(data[at + 4 : at + 8], "big")
    return length if at + _HEADER + length <= len(data) else -1


def unframe(data: bytes) -> bytes:
    """``data`` with every telemetry frame replaced by its message (and a line break)."""
    if _MAGIC not in data:
        return data
    out: list[bytes] = []
    at = 0
    while at < len(data):
        found = data.find(_MAGIC, at)
        while found >= 0 and _frame_at(data, found) < 0:
            found = data.find(_MAGIC, found + 1)
        if found < 0:
            out.append(data[at:])
            break
        out.append(data[at:found])
        length = _frame_at(data, found)
        message = data[found + _HEADER : found + _HEADER + length]
        out.append(message if message.endswith(b"\n") else message + b"\n")
        at = found + _HEADER + length
    return b"".join(out)
