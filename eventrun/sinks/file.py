"""The ``file:PATH`` sink: JSON lines appended to a file.

``PATH`` is relative to the config file's directory unless absolute (``file:/var/x.jsonl``);
parent directories are created. Each message is one line: its payload, a JSON document
(re-encoded compactly when it spans several lines). A send appends all its lines with one
write under a lock, then fsyncs, so a batch is on disk before :meth:`FileSink.send` returns
and lines of concurrent sends never interleave. The file is opened per send (``O_APPEND``),
so log rotation by rename just works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable

__all__ = ["FileSink", "create"]


def create(spec: SinkSpec) -> FileSink:
    """Entry point ``eventrun.sinks: file``."""
    return FileSink(spec)


def _line(message: OutMessage, url: str) -> bytes:
    payload = message.payload
    if b"\n" not in payload and b"\r" not in payload:
        return payload + b"\n"
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise SinkRejected(f"{url}: a message spanning lines is not JSON: {exc}") from exc
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class FileSink:
    """A :class:`eventrun.abc.Sink` appending JSON lines to one file."""

    def __init__(self, spec: SinkSpec) -> None:
        target = spec.target.strip()
        if not target:
            raise ConfigError(f"{spec.url}: expected file:PATH, got no path")
        if target.startswith("//"):  # file:///abs/path written URL-style
            target = "/" + target.lstrip("/")
        path = Path(target).expanduser()
        self.url = spec.url
        self.path = path if path.is_absolute() else spec.config_dir / path
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Append one line per message and fsync; SinkUnavailable when the file system fails,
        SinkRejected for a payload that cannot be one line."""
        if not messages:
            return
        data = b"".join(_line(m, self.url) for m in messages)
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(self._append, data)
            except OSError as exc:
                raise SinkUnavailable(f"{self.url}: cannot append to {self.path}: {exc}") from exc

    def _append(self, data: bytes) -> None:
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # make the new directory entry durable too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
