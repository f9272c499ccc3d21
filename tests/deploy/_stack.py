"""Podman and podman-compose driving for the container tests (tests/deploy/test_containers.py).

:class:`Stack` is one Compose project (``deploy/compose.yaml`` + ``deploy/compose.test.yaml``)
under a unique project name: ``up``/``down``, the replicas' container names and published
ports, and :meth:`Stack.client` to run ``stack_client.py`` in a container on the project's
network (producing, reading the handlers' ledger). Everything runs rootful podman with the
runc runtime and cgroupfs manager that ``scripts/container-deps.sh`` configures, and with
explicit ``--ulimit``s (podman's defaults exceed this machine's hard limits).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from tests.fixtures._ports import free_port

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
SCRIPT = ROOT / "scripts" / "container-deps.sh"
BASE_IMAGE = "localhost/eventrun-base/python:bookworm"
ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=8192:8192"]
CLIENT = Path(__file__).with_name("stack_client.py")
T = TypeVar("T")


def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure (with ``check``) fail the test with its output."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode:
        pytest.fail(
            f"{' '.join(args[:4])}... exited {done.returncode}:\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}",
            pytrace=False,
        )
    return done


def container_deps() -> None:
    """scripts/container-deps.sh: packages, podman config, base images (idempotent)."""
    if os.geteuid() != 0:
        pytest.fail("the container tests run rootful podman: run them as root", pytrace=False)
    env = {**os.environ, "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1200, env=env, check=False
    )
    if done.returncode:
        pytest.fail(f"scripts/container-deps.sh failed:\n{done.stderr[-4000:]}", pytrace=False)


def trust_args(tmp: Path) -> list[str]:
    """As container-deps.sh: behind a TLS-inspecting proxy (a CA in
    /usr/local/share/ca-certificates) RUN steps borrow the host's CA bundle, read-only,
    and pip is told to use it. Nothing of it lands in the image."""
    if not any(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        return []
    conf = tmp / "pip.conf"
    conf.write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    return ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro", "-v", f"{conf}:/etc/pip.conf:ro"]


def build_image(tag: str, tmp: Path) -> float:
    """Build deploy/Dockerfile from the repository on the local base; seconds taken."""
    start = time.monotonic()
    run(
        "podman", "build", "--quiet", "--no-cache", "--layers=false", "--pull=never",
        "--format", "docker",  # the docker format keeps the HEALTHCHECK
        *trust_args(tmp), *ULIMITS,
        "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
        "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(ROOT),
        timeout=900,
    )  # fmt: skip
    return time.monotonic() - start


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.5)


def http_get(url: str, token: str | None = None, timeout: float = 3) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


class Line(NamedTuple):
    """One ledger line: a record processed by a replica at a time."""

    id: str
    host: str
    at: float


@dataclass
class Stack:
    """One Compose project of deploy/ on the local images."""

    image: str
    tmp: Path
    project: str = field(default_factory=lambda: f"ertest{secrets.token_hex(3)}")
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    sqs_port: int = field(default_factory=free_port)

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "EVENTRUN_TOKENS": self.token,
            "EVENTRUN_IMAGE": self.image,
            "SQS_PORT": str(self.sqs_port),
        }

    def compose(self, *args: str, replicas: int | None = None, timeout: float = 300) -> str:
        files = ["-f", str(DEPLOY / "compose.yaml"), "-f", str(DEPLOY / "compose.test.yaml")]
        if replicas is not None:  # podman-compose 1.0.3 has no --scale: an override does it
            scale = self.tmp / f"compose.scale{replicas}.yaml"
            scale.write_text(
                json.dumps({"services": {"eventrun": {"deploy": {"replicas": replicas}}}})
            )
            files += ["-f", str(scale)]
        podman_compose = shutil.which("podman-compose") or "podman-compose"
        done = subprocess.run(
            [podman_compose, "-p", self.project, *files, *args],
            capture_output=True, text=True, timeout=timeout, env=self.env(), check=False,
        )  # fmt: skip
        if done.returncode:
            pytest.fail(
                f"podman-compose {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def name(self, service: str, number: int = 1) -> str:
        return f"{self.project}_{service}_{number}"

    def state(self, container: str) -> dict[str, Any]:
        out = run("podman", "inspect", "--format", "{{json .State}}", container)
        return dict(json.loads(out.stdout))

    def hostname(self, container: str) -> str:
        return run(
            "podman", "inspect", "--format", "{{.Config.Hostname}}", container
        ).stdout.strip()

    def url(self, container: str) -> str:
        """The replica's published loopback port."""
        address = run("podman", "port", container, "9000").stdout.split()[0]
        return f"http://{address}"

    def ready(self, container: str) -> bool:
        return http_get(self.url(container) + "/readyz")[0] == 200

    def _client_command(self, *args: str) -> list[str]:
        return [
            "podman", "run", "--rm", "--network", self.network, "--no-healthcheck", *ULIMITS,
            "-v", f"{CLIENT}:/tmp/stack_client.py:ro", "--entrypoint", "python",
            self.image, "/tmp/stack_client.py", *args,
        ]  # fmt: skip

    def client(self, *args: str) -> Any:
        """stack_client.py in a container on the stack's network; its JSON answer."""
        return json.loads(run(*self._client_command(*args), timeout=180).stdout)

    def client_start(self, *args: str) -> subprocess.Popen[str]:
        """stack_client.py in the background (producing while a replica is stopped)."""
        return subprocess.Popen(
            self._client_command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def client_finish(self, proc: subprocess.Popen[str]) -> Any:
        out, err = proc.communicate(timeout=180)
        if proc.returncode:
            pytest.fail(f"stack_client.py exited {proc.returncode}: {err[-3000:]}")
        return json.loads(out)

    def ledger(self) -> dict[str, list[Line]]:
        """What the handlers processed, per source: (record id, replica hostname, time)."""
        raw = self.client("ledger")
        return {
            source: [Line(*line.split()[:2], float(line.split()[2])) for line in lines]
            for source, lines in raw.items()
        }

    def logs(self, container: str) -> str:
        done = run("podman", "logs", container, check=False)
        return done.stdout + done.stderr

    def down(self) -> None:
        self.compose("down", "-v", timeout=600)
        run("podman", "network", "rm", "-f", self.network, check=False)
