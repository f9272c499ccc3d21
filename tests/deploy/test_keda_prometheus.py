"""The KEDA ScaledObject's Prometheus trigger, evaluated by a real Prometheus.

Debian's ``prometheus`` scrapes a running eventrun daemon's /metrics (bearer token, as the
manifests tell a Prometheus to) with the ``namespace`` and ``pod`` labels Kubernetes'
service discovery would add, and the trigger's query from
``deploy/k8s/keda-scaledobject.yaml`` is run through Prometheus' HTTP API. It must read 0
(below the activation threshold) while the daemon idles, reach the threshold while every
worker of a function is busy (KEDA's AverageValue would then ask for
``ceil(value / threshold)`` replicas), and fall back when the work ends: the autoscaling
signal is measured, not assumed. About 10 seconds.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._daemon import Daemon
from tests.fixtures._ports import PortTaken, free_port, start_on_free_port, wait_for_port

K8S = Path(__file__).parents[2] / "deploy" / "k8s"
TOKEN = "keda-prometheus-test-token-0123"
CONFIG = """\
server:
  host: 127.0.0.1
  auth: {tokens_env: EVENTRUN_TOKENS}
store: {url: "sqlite:///state.db"}
functions:
  work:
    handler: handlers:work
    concurrency: 2
    environment: {RELEASE: "%(release)s"}
    triggers:
      - http: {path: /work, methods: [POST], auth: none}
"""
HANDLER = '''\
import os, time

def work(event, context):
    """Busy until the test creates $RELEASE (at most 60 s)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["RELEASE"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"ok": True}
'''


def prometheus_trigger() -> dict[str, Any]:
    scaled = yaml.safe_load((K8S / "keda-scaledobject.yaml").read_text())
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    return dict(trigger)


class Prometheus:
    """A Prometheus server on a free loopback port with its own config and storage."""

    def __init__(self, tmp: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "prometheus not found: apt-get install prometheus (scripts/system-deps.sh)",
                pytrace=False,
            )
        self.binary = binary
        self.tmp = tmp
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "eventrun",
                    "authorization": {"type": "Bearer", "credentials": TOKEN},
                    "static_configs": [
                        {
                            "targets": [target],
                            # what kubernetes_sd_configs + relabelling give a pod's target
                            "labels": {"namespace": "eventrun", "pod": "eventrun-7d9f-abcde"},
                        }
                    ],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = start_on_free_port(self._launch, free_port())

    def _launch(self, port: int) -> None:
        with (self.tmp / "prometheus.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(port, self.proc, "prometheus")
        except PortTaken:
            self.stop()
            raise

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "handlers.py").write_text(HANDLER)
    config = tmp_path / "eventrun.yaml"
    config.write_text(CONFIG % {"release": tmp_path / "release"})
    d = Daemon(config, env={"EVENTRUN_TOKENS": TOKEN})
    try:
        yield d.start()
    finally:
        (tmp_path / "release").touch()
        d.stop()


def wait_value(prom: Prometheus, promql: str, ok: Any, what: str, timeout_s: float = 30) -> float:
    deadline = time.monotonic() + timeout_s
    while True:
        value = prom.value(promql)
        if value is not None and ok(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: the query gave {value!r} for {timeout_s:.0f} s")
        time.sleep(0.2)


def test_keda_saturation_query_against_a_real_prometheus(daemon: Daemon, tmp_path: Path) -> None:
    trigger = prometheus_trigger()
    meta = trigger["metadata"]
    query, threshold = meta["query"], float(meta["threshold"])
    activation = float(meta["activationThreshold"])
    assert trigger["metricType"] == "AverageValue"
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    prom = Prometheus(prom_dir, f"127.0.0.1:{daemon.port}")
    try:
        # the scrape works with the token (up = 1) and the query sees the idle daemon
        wait_value(prom, 'up{job="eventrun"}', lambda v: v == 1, "scrape of /metrics")
        idle = wait_value(prom, query, lambda v: v == 0, "idle saturation")
        assert idle <= activation  # KEDA stays at minReplicaCount

        # every worker of `work` busy: 2 requests in flight on concurrency 2
        calls = [
            threading.Thread(
                target=lambda: urllib.request.urlopen(
                    urllib.request.Request(f"{daemon.url}/work", data=b"{}", method="POST"),
                    timeout=90,
                ).read()
            )
            for _ in range(2)
        ]
        for call in calls:
            call.start()
        busy = wait_value(prom, query, lambda v: v >= threshold, "saturation under load")
        assert busy == 1.0
        assert math.ceil(busy / threshold) == 2  # KEDA's AverageValue: one more replica

        (tmp_path / "release").touch()
        for call in calls:
            call.join(timeout=30)
        wait_value(prom, query, lambda v: v < activation, "saturation after the work")
    finally:
        prom.stop()
