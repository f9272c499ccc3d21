"""Run ``eventrun run`` as a real subprocess (for SIGKILL/SIGTERM and end-to-end tests).

The daemon logs JSON lines to stderr; :class:`Daemon` reads them on a thread, so a test
waits for a log *event* (``runtime.ready``...) instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fixtures._ports import free_port


class Daemon:
    """One ``eventrun run`` process and its parsed log lines."""

    def __init__(
        self,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        new_session: bool = False,
        args: Sequence[str] = (),
        command_prefix: list[str] | None = None,
    ) -> None:
        """``new_session``: run the daemon as the leader of its own session and process
        group, like a shell's foreground job, so that :meth:`interrupt` can send Ctrl-C's
        SIGINT to the whole group as a terminal does. ``args`` go to ``eventrun run``
        as they are; a ``config`` ending in ``template.yaml`` is passed with ``-t``.
        ``command_prefix`` runs it through another command that execs it, such as
        ``ip netns exec NAME`` (its HTTP port is then inside that namespace)."""
        self.config = config
        self.command_prefix = list(command_prefix or [])
        self._own_port = port is None  # chosen here: may move if another process took it
        self.port = port or free_port()
        self.new_session = new_session
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_ready: bool = True, timeout_s: float = 60) -> Daemon:
        """Start the daemon; wait for ``runtime.ready`` if ``wait_ready``. A port chosen
        here that another process took before the daemon bound it is replaced by a new
        one (up to 5 times)."""
        for attempt in range(5):
            self._launch()
            if not wait_ready:
                return self
            try:
                self.wait_for(lambda e: e.get("event") == "runtime.ready", timeout_s)
            except AssertionError:
                if attempt == 4 or not self._own_port or not self._lost_port():
                    raise
                self.port = free_port()
                continue
            return self
        raise AssertionError("unreachable")

    def _lost_port(self) -> bool:
        assert self.proc is not None
        assert self._reader is not None
        if self.proc.wait(timeout=10) == 0:
            return False
        self._reader.join(10)  # every line read
        with self._cond:
            return any("address already in use" in line.lower() for line in self.raw)

    def _launch(self) -> None:
        with self._cond:
            self.logs.clear()
            self.raw.clear()
        self.proc = subprocess.Popen(
            [
                *self.command_prefix,
                sys.executable,
                "-m",
                "eventrun",
                "run",
                "-t" if self.config.name.endswith("template.yaml") else "-c",
                str(self.config),
                *self.args,
                "--port",
                str(self.port),
                "--log-format",
                "json",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.config.parent,
            start_new_session=self.new_session,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            with self._cond:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    self.logs.append(json.loads(line))
                self._cond.notify_all()
        proc.stderr.close()  # EOF: the daemon exited; no ResourceWarning later
        with self._cond:
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 60
    ) -> dict[str, Any]:
        """Block until a log line matches ``predicate``; fail with the log tail if the
        daemon exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for entry in self.logs[seen:]:
                    if predicate(entry):
                        return entry
                seen = len(self.logs)
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"daemon exited with {self.proc.returncode}:\n" + "\n".join(self.raw[-40:])
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.raw[-40:])
                    raise AssertionError(f"timed out waiting for a log event:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.logs if e.get("event") == name]

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like a crashed host."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the daemon's process group (needs ``new_session``)."""
        assert self.proc is not None
        assert self.new_session, "SIGINT to the group would reach the test runner too"
        os.killpg(self.proc.pid, signal.SIGINT)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait for a graceful exit; return the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def daemon(config: Path, **kwargs: Any) -> Iterator[Daemon]:
    """A started daemon, stopped (SIGTERM, then SIGKILL) when the block ends."""
    d = Daemon(config, **kwargs)
    try:
        yield d.start()
    finally:
        d.stop()
