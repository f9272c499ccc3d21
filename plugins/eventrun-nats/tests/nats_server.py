"""A real ``nats-server -js`` on a free loopback port with its own store directory.

Never the machine's shared server on 4222. ``stop()``/``start()`` keep the port and the
store directory (a broker restart that keeps the streams); ``kill()`` is SIGKILL.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.fixtures._ports import PortTaken, free_port, start_on_free_port, wait_for_port

MISSING = "nats-server not found: apt-get install nats-server (or run scripts/system-deps.sh)"


class NatsServer:
    """One ``nats-server -js`` process bound to 127.0.0.1."""

    def __init__(self, store_dir: Path) -> None:
        binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
        if binary is None:
            pytest.fail(MISSING, pytrace=False)
        self.binary = binary
        self.store_dir = store_dir
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._started:
            self._launch(self.port)
            return
        self.port = start_on_free_port(self._launch, self.port)
        self._started = True

    def _launch(self, port: int) -> None:
        args = [self.binary, "-js", "-p", str(port), "-a", "127.0.0.1", "-sd", str(self.store_dir)]
        # its log goes to a file beside the store: a pipe nobody reads would fill and block it
        with Path(f"{self.store_dir}.log").open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for_port(port, self._proc, "nats-server")
        except PortTaken:
            self.stop()
            raise
        self.port = port

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGTERM: a clean shutdown that keeps the store)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()
