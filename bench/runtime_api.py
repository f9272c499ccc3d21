"""Runtime API workers: warm round trip and cold start next to the Python process runtime.

    .venv/bin/python bench/runtime_api.py [--warm N] [--cold N]

Warm round trip = ``await runner.invoke()`` of a trivial handler through each runtime's
Runtime API endpoint (``/next`` answered, ``/response`` received), measured by the
caller. Cold start = process spawn to the runtime's first ``/next``
(``InvokeResult.init_duration_s``). Runtimes: a custom ``bootstrap`` (Python with
http.client, keep-alive), Node.js 20 with aws-lambda-ric, the Python client awslambdaric
as a ``command``, and eventrun's own Python worker (fork server) for comparison. Node
needs ``make node-ric`` (aws-lambda-ric in .cache/).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from bench._procs import emit
from bench.workers import RESULTS, line
from eventrun.config import DEFAULT_INHERIT_ENV
from eventrun.workers import create_runner

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / ".cache" / "aws-lambda-ric-3.3.0" / "node_modules"

PY_HANDLER = "def handler(event, context):\n    return {'ok': True}\n"
NODE_HANDLER = "export const handler = async () => ({ ok: true });\n"
BOOTSTRAP = """import http.client, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
conn = http.client.HTTPConnection(host, int(port))
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse(); r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    conn.request("POST", f"/2018-06-01/runtime/invocation/{rid}/response", b'{"ok": true}')
    conn.getresponse().read()
"""


@dataclass
class Settings:
    handler: str = ""
    runtime: str = "process"
    timeout: float = 30.0
    memory_mb: int = 512
    concurrency: int = 1
    min_warm: int = 0
    max_requests: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV
    code: str | None = None
    command: list[str] | None = None


def kinds(root: Path) -> dict[str, dict[str, Any]]:
    found = {
        "python process worker": {"handler": "app.handler", "code": "py"},
        "provided (python bootstrap)": {"runtime": "provided", "code": "custom"},
        "awslambdaric (command)": {
            "runtime": "python3.11",
            "code": "py",
            "command": [sys.executable, "-m", "awslambdaric", "app.handler"],
        },
    }
    if (NODE_MODULES / "aws-lambda-ric").is_dir():
        found["nodejs20.x (aws-lambda-ric)"] = {
            "runtime": "nodejs20.x",
            "handler": "index.handler",
            "code": "node",
        }
    else:
        print("nodejs20.x skipped: run `make node-ric` first", file=sys.stderr)
    return found


def write_apps(root: Path) -> None:
    (root / "py").mkdir()
    (root / "py" / "app.py").write_text(PY_HANDLER)
    (root / "custom").mkdir()
    (root / "custom" / "bootstrap").write_text(f"#!{sys.executable}\n{BOOTSTRAP}")
    (root / "custom" / "bootstrap").chmod(0o755)
    (root / "node").mkdir()
    (root / "node" / "index.mjs").write_text(NODE_HANDLER)
    if NODE_MODULES.is_dir():
        (root / "node" / "node_modules").symlink_to(NODE_MODULES)


async def cold(root: Path, n: int, **settings: Any) -> list[float]:
    samples: list[float] = []
    async with create_runner("bench", Settings(max_requests=1, **settings), config_dir=root) as r:
        for _ in range(n):
            result = await r.invoke(b"{}")
            if not result.ok or result.init_duration_s is None:
                raise SystemExit(f"unexpected result: {result}")
            samples.append(result.init_duration_s)
    return samples


async def warm(root: Path, n: int, **settings: Any) -> list[float]:
    samples: list[float] = []
    async with create_runner("bench", Settings(min_warm=1, **settings), config_dir=root) as r:
        for _ in range(200):
            await r.invoke(b"{}")
        for _ in range(n):
            started = time.perf_counter()
            result = await r.invoke(b'{"k": 1}')
            samples.append(time.perf_counter() - started)
            if not result.ok:
                raise SystemExit(f"unexpected result: {result}")
    return samples


async def main(args: argparse.Namespace) -> None:
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - lives as long as the process
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(devnull),
    )
    if shutil.which("node") is None:
        print("node not found: nodejs20.x is skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_apps(root)
        print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
        for label, settings in kinds(root).items():
            line(f"warm round trip, {label}", await warm(root, args.warm, **settings), 1e3, "ms")
        for label, settings in kinds(root).items():
            line(f"cold start, {label}", await cold(root, args.cold, **settings), 1e3, "ms")
    emit("runtime_api", {"results": RESULTS})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=3000)
    parser.add_argument("--cold", type=int, default=20)
    anyio.run(main, parser.parse_args())
