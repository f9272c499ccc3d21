"""structlog set-up, done once by the CLI: JSON lines when stdout is not a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import msgspec
import structlog

from eventrun.common import one_line

__all__ = ["configure_logging", "json_renderer", "quiet_logging"]

LogFormat = Literal["auto", "json", "console"]


_ENCODER = msgspec.json.Encoder(enc_hook=repr)


def _dumps(event: object, **_: object) -> str:
    # msgspec escapes C0 controls; one_line also escapes DEL, C1 (U+0085) and U+2028/9,
    # so a value holding them never splits the JSON line (isascii() is the cheap check)
    text = _ENCODER.encode(event).decode()
    return text if text.isascii() else one_line(text)


def json_renderer() -> structlog.processors.JSONRenderer:
    """JSON lines through msgspec (several times faster than the stdlib encoder; a value
    it cannot encode is logged as its ``repr``)."""
    return structlog.processors.JSONRenderer(serializer=_dumps)


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and stdlib logging) for the daemon and the CLI.

    ``auto`` picks JSON when stderr is not a TTY. Event names are stable dotted
    identifiers; values are key-value pairs; payloads and secrets are never logged.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; expected debug, info, warning or error")
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        json_renderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # not cached: module-level loggers then follow a later reconfiguration (tests
        # capture logs after the CLI configured them); one log line per batch, not per
        # record, so the lookup costs nothing measurable
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)


class _LazyStderr:
    """Whatever ``sys.stderr`` is at write time (not at configure time)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def quiet_logging() -> None:
    """One-shot commands: warnings and errors only, on stderr, so that stdout carries
    nothing but the command's result (``eventrun invoke f | jq`` works)."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=_LazyStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
