"""deploy/prometheus and deploy/grafana against Prometheus itself: ``promtool`` checks and
unit tests of the rules, then a real Prometheus scraping a running daemon whose failing
functions drive the error-ratio and DLQ alerts to firing, and every dashboard query
evaluated there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from tests._daemon import daemon
from tests.fixtures.prometheus import Prometheus, promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "eventrun-rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "eventrun-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "eventrun-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout
    unit = subprocess.run(
        [tool, "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        cwd=RULES_TEST.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def dashboard_exprs() -> dict[str, str]:
    doc = json.loads(DASHBOARD.read_text())
    return {p["title"]: t["expr"] for p in doc["panels"] for t in p["targets"]}


def test_the_dashboard_plots_the_recorded_series() -> None:
    recorded = set(re.findall(r"record: (\S+)", RULES.read_text()))
    exprs = dashboard_exprs()
    assert len(exprs) == 8
    assert recorded <= set(exprs.values()), recorded - set(exprs.values())


def documented_metrics() -> set[str]:
    """Family names of the metric tables in docs/metrics.md."""
    return set(re.findall(r"^\| `(eventrun_[a-z_]+)` \|", METRICS_DOC.read_text(), re.M))


CONFIG = """
connections:
  redis: {{main: {{url: "{url}"}}}}
functions:
  ok:
    handler: fns.ok
    triggers:
      - http: {{path: /ok, methods: [GET], auth: none}}
  fails:
    handler: fns.fails
    triggers:
      - http: {{path: /fails, methods: [GET], auth: none}}
  stream:
    handler: fns.fails
    triggers:
      - redis_streams:
          connection: main
          streams: [{stream}]
          maximum_retry_attempts: 0
"""

FNS = """
def ok(event, context):
    return {"statusCode": 200, "body": "ok"}

def fails(event, context):
    raise RuntimeError("this function always fails")
"""


def firing(prom: Prometheus, alert: str, **labels: str) -> Callable[[], bool]:
    def check() -> bool:
        return any(
            a["labels"]["alertname"] == alert
            and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())
            for a in prom.alerts()
        )

    return check


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_a_real_prometheus_scrapes_the_daemon_and_the_alerts_fire(
    tmp_path: Path, redis_url: str, prometheus_factory: Callable[..., Prometheus]
) -> None:
    stream = f"prom-{os.getpid()}-{time.monotonic_ns()}"
    (tmp_path / "fns.py").write_text(textwrap.dedent(FNS))
    config = tmp_path / "eventrun.yaml"
    config.write_text(textwrap.dedent(CONFIG.format(url=redis_url, stream=stream)))
    # the shipped rules, with their expressions unchanged; only "for:" is cut to 0 s so
    # that a test need not keep a function failing for 5-10 minutes
    rules = tmp_path / "rules.yml"
    rules.write_text(re.sub(r"for: \d+m", "for: 0s", RULES.read_text()))
    client = redis.Redis.from_url(redis_url)
    with daemon(config) as d:
        prom = prometheus_factory(targets=[f"127.0.0.1:{d.port}"], rule_files=[rules])
        prom.wait_for('up{job="eventrun"} == 1')
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=d.url, timeout=10) as http:
                while not stop.is_set():
                    http.get("/ok")
                    http.get("/fails")
                    client.xadd(stream, {"data": '{"n": 1}'})
                    time.sleep(0.1)

        driver = threading.Thread(target=traffic)
        driver.start()
        try:
            for alert, labels in [
                ("EventrunErrorRatioHigh", {"function": "fails"}),
                ("EventrunErrorRatioHigh", {"function": "stream"}),
                ("EventrunDlqGrowing", {"queue": "local:stream-dlq"}),
            ]:
                check = firing(prom, alert, **labels)
                deadline = time.monotonic() + 90
                while not check():
                    assert time.monotonic() < deadline, (alert, prom.alerts())
                    time.sleep(0.5)
            ok_ratio = prom.query('eventrun:error_ratio:rate5m{function="ok"}')
            assert [float(r["value"][1]) for r in ok_ratio] == [0.0]
            assert not firing(prom, "EventrunErrorRatioHigh", function="ok")()
            assert not firing(prom, "EventrunSaturated")()

            # every family the daemon exports is documented, and the core ones arrived
            exported = 'count by (__name__) ({job="eventrun", __name__=~"eventrun_.*"})'
            names = {r["metric"]["__name__"] for r in prom.query(exported)}
            families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in names}
            assert families <= documented_metrics(), families - documented_metrics()
            assert {
                "eventrun_invocations",
                "eventrun_invocation_duration_seconds",
                "eventrun_concurrency_saturation",
                "eventrun_batch_invocations",
                "eventrun_records_dead_lettered",
                "eventrun_source_lag",
                "eventrun_dlq_depth",
            } <= families

            # the PromQL examples of docs/metrics.md answer what the doc says
            errors = prom.query(
                'sum by (function) (rate(eventrun_invocations_total{outcome="error"}[5m]))'
            )
            assert {r["metric"]["function"] for r in errors} == {"fails", "stream"}
            assert all(float(r["value"][1]) > 0 for r in errors)
            dlq = prom.query("eventrun_dlq_depth > 0")
            assert [r["metric"]["queue"] for r in dlq] == ["local:stream-dlq"]
            p99 = prom.query(
                "histogram_quantile(0.99, sum by (le, function) "
                "(rate(eventrun_invocation_duration_seconds_bucket[5m])))"
            )
            assert {r["metric"]["function"] for r in p99} == {"ok", "fails", "stream"}

            # every dashboard query evaluates, with data, against this Prometheus
            for title, expr in dashboard_exprs().items():
                assert prom.query(expr), (title, expr)
        finally:
            stop.set()
            driver.join()
