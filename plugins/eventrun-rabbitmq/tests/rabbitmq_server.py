"""A real ``rabbitmq-server`` of the test session's own, on free loopback ports.

Nothing is shared with the machine's broker: its own node name
(``eventrun-test-<pid>-<n>@localhost``), AMQP port, distribution port and Erlang port
mapper (``ERL_EPMD_PORT``, so its own ``epmd``), data, log and config directories and
``HOME`` (the Erlang cookie) in a temporary directory. ``stop``/``start`` keep the ports
and the data (durable queues and persistent messages survive a restart); ``kill``
SIGKILLs the node (a crash). ``close`` stops it and the ``epmd`` it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from itertools import count
from pathlib import Path

import pytest

from tests.fixtures._ports import (
    PortTaken,
    _listening_inodes,
    _owns,
    free_port,
    start_on_free_port,
)

MISSING = (
    "rabbitmq-server not found: apt-get install rabbitmq-server "
    "(or run scripts/system-deps.sh as root)"
)
SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # not /usr/sbin's: that one su's
BOOT_TIMEOUT_S = 90.0
_serial = count(1)


def _script() -> str:
    if SCRIPT.exists():
        return str(SCRIPT)
    found = shutil.which("rabbitmq-server")
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


class RabbitServer:
    """One RabbitMQ node on 127.0.0.1 with a guest/guest login on vhost ``/``."""

    def __init__(self) -> None:
        self.script = _script()
        self.dir = Path(tempfile.mkdtemp(prefix="eventrun-rabbitmq-"))
        self.node = f"eventrun-test-{os.getpid()}-{next(_serial)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            "loopback_users = none\nlog.console = false\nlog.file.level = warning\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        d = self.dir
        return {
            **os.environ,
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_GENERATED_CONFIG_DIR": str(d / "config"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_SCHEMA_DIR": str(d / "schema"),
        }

    def start(self) -> None:
        """Start the node (no-op when running) and wait until it accepts AMQP."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._started:
            self._launch(self.port)
            return
        self.port = start_on_free_port(self._launch, self.port)
        self._started = True

    def _launch(self, port: int) -> None:
        self.port = port
        log = (self.dir / "server.out").open("ab")
        self._proc = subprocess.Popen(
            [self.script], env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        try:
            self._wait_listening(port)
        except PortTaken:
            self.kill()
            self.dist_port = free_port()
            raise
        except RuntimeError:
            self.kill()
            tail = (self.dir / "server.out").read_text(errors="replace")[-2000:]
            pytest.fail(f"rabbitmq-server did not start: {tail}", pytrace=False)

    def beam_pid(self) -> int | None:
        """The Erlang VM's pid (the start script forks it and writes it here)."""
        try:
            return int((self.dir / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_listening(self, port: int) -> None:
        """Until the node's own VM listens on ``port`` (PortTaken: it exited first, or
        another process listens there)."""
        assert self._proc is not None
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PortTaken(f"rabbitmq-server exited with {self._proc.returncode}")
            inodes = _listening_inodes(port)
            pid = self.beam_pid()
            if inodes and pid is not None:
                if _owns(pid, inodes):
                    return
                raise PortTaken(f"another process listens on 127.0.0.1:{port}")
            time.sleep(0.1)
        raise RuntimeError(f"rabbitmq-server did not listen within {BOOT_TIMEOUT_S} s")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), waiting for the node to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # the script stops the VM and waits for it
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc = proc
            self.kill()
        (self.dir / "rabbitmq.pid").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the node's VM (a crash), then its start script."""
        proc, self._proc = self._proc, None
        pid = self.beam_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        (self.dir / "rabbitmq.pid").unlink(missing_ok=True)

    def unacked(self, queue: str) -> int:
        """Deliveries of ``queue`` not yet acknowledged (``rabbitmqctl list_queues``)."""
        ctl = Path(self.script).with_name("rabbitmqctl")
        out = subprocess.run(
            [str(ctl), "-n", self.node, "list_queues", "-q", "name", "messages_unacknowledged"],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for line in out.splitlines():
            name, _, count = line.rpartition("\t")
            if name == queue:
                return int(count)
        raise AssertionError(f"no queue {queue!r} in {out!r}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        epmd = shutil.which("epmd") or _erts_epmd()
        if epmd is not None:
            subprocess.run(
                [epmd, "-port", str(self.epmd_port), "-kill"],
                capture_output=True,
                check=False,
                timeout=10,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


def _erts_epmd() -> str | None:
    for candidate in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")):
        return str(candidate)
    return None


def wait_until(predicate: object, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true (for synchronous checks in tests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
