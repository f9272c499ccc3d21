"""One message, one line: how user input is rendered inside errors and log lines.

Config keys, paths, header names, queue names and handler strings come from users, and
any of them can hold a character that a terminal, ``str.splitlines()`` or a log shipper
takes as a line break: not only ``\\n`` and ``\\r`` but ``\\x0b``, ``\\x0c``,
``\\x1c``-``\\x1e``, ``\\x85``, U+2028 and U+2029. Quoted raw, one problem prints as two
lines and a log line splits in two (or forges a second one).

:func:`one_line` is the one place that escapes them, JSON-style (``\\n``, ``\\u2028``),
leaving every other character as it is. Every path that shows user text goes through it:
config problems (:func:`eventrun.config._errors.format_problem`), the CLI's ``error:``
lines, the JSON log renderer and the HTTP error bodies.
"""

from __future__ import annotations

import unicodedata

__all__ = ["one_line"]


def _escape(code: int) -> str:
    short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
    return short.get(code, f"\\u{code:04x}")


# Every control character (Cc: C0, DEL, C1) and the Unicode line and paragraph
# separators (Zl, Zp): the set that splitlines() and terminals may break on, and more.
_TABLE = {
    code: _escape(code)
    for code in range(0x2030)
    if unicodedata.category(chr(code)) in ("Cc", "Zl", "Zp")
}


def one_line(text: str) -> str:
    """``text`` with every control character and line separator escaped JSON-style.

    Idempotent on its own output (it adds backslashes only in front of characters it
    replaces), and the identity on plain text: printable ASCII is returned as is.
    """
    if text.isascii() and text.isprintable():
        return text
    return text.translate(_TABLE)
