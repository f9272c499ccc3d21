"""HTTP: the Invoke API and a function URL vs a bare endpoint of the same ASGI stack.

    python -m bench.http [--seconds 8] [--reps 3] [--connections 8]

All three servers are separate processes on the same stack (Starlette on uvicorn with
httptools and uvloop) and return the same JSON body; the load generator is ``wrk``
(Debian package) with the same connection count. Throughput is measured at
``--connections``; added latency at one connection (p50/p99 minus the bare endpoint's).
Runs alternate (bare, invoke, url, ...) so drift affects all of them alike; a ratio is
the median of the per-repetition ratios to that repetition's bare run (range shown).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench._procs import daemon, emit, free_port, paired_ratio, summary, wait_port, write_app

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"ok": true}'

async def hello(request):
    await request.body()
    return Response(BODY, media_type="application/json")

app = Starlette(routes=[Route("/hello", hello, methods=["GET", "POST"]),
                        Route("/2015-03-31/functions/hello/invocations", hello, methods=["POST"])])
"""

HANDLER = """
def handler(event, context):
    return {"ok": True}

async def ahandler(event, context):
    return {"ok": True}
"""

CONFIG = """
server: {{host: 127.0.0.1, port: 9000, auth: {{mode: none}}}}
store: {{url: "sqlite:///state.db"}}
functions:
  hello:
    handler: {handler}
    runtime: {runtime}
    concurrency: {concurrency}
    min_warm: {warm}
    triggers:
      - http: {{path: /hello, methods: [GET, POST], auth: none}}
"""

POST_LUA = (
    'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'
)


def wrk_workdir(prefix: str) -> tuple[Path, Path]:
    """A temporary directory and the wrk POST script in it; exits when wrk is missing."""
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk (make bench installs it)")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    script = tmp / "post.lua"
    script.write_text(POST_LUA)
    return tmp, script


def _wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"\s(50|99)%\s+([\d.]+\w+)", out)}
    return {
        "rps": rps,
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group(0))  # type: ignore[union-attr]
    if text.endswith("us"):
        return value / 1000
    if text.endswith("ms"):
        return value
    return value * 1000  # "s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runtime", default="process", choices=["process", "inline"])
    args = parser.parse_args()
    tmp, script = wrk_workdir("eventrun-bench-http-")
    (tmp / "bare").mkdir()
    (tmp / "bare" / "bare_app.py").write_text(BARE_APP)
    handler = "app.ahandler" if args.runtime == "inline" else "app.handler"
    config = write_app(
        tmp / "app",
        CONFIG.format(
            handler=handler,
            runtime=args.runtime,
            concurrency=args.connections,
            warm=args.connections if args.runtime == "process" else 0,
        ),
        {"app.py": HANDLER},
    )
    bare_port, daemon_port = free_port(), free_port()
    targets = {
        "bare": f"http://127.0.0.1:{bare_port}/hello",
        "invoke": f"http://127.0.0.1:{daemon_port}/2015-03-31/functions/hello/invocations",
        "url": f"http://127.0.0.1:{daemon_port}/hello",
    }
    through: dict[str, list[float]] = {k: [] for k in targets}
    p50: dict[str, list[float]] = {k: [] for k in targets}
    p99: dict[str, list[float]] = {k: [] for k in targets}
    errors = 0.0
    with ExitStack() as stack:
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--port",
                str(bare_port),
                "--http",
                "httptools",
                "--loop",
                "uvloop",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=tmp / "bare",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(bare.wait)
        stack.callback(bare.terminate)
        wait_port(bare_port, bare)
        stack.enter_context(daemon(config, daemon_port))
        for url in targets.values():  # warm up
            _wrk(url, args.connections, 1, script)
        for _ in range(args.reps):
            for name, url in targets.items():
                r = _wrk(url, args.connections, args.seconds, script)
                through[name].append(r["rps"])
                errors += r["errors"]
                one = _wrk(url, 1, max(2.0, args.seconds / 2), script)
                p50[name].append(one["p50_ms"])
                p99[name].append(one["p99_ms"])
    results: dict[str, object] = {
        "runtime": args.runtime,
        "connections": args.connections,
        "errors": errors,
    }
    print(f"HTTP ({args.runtime} runtime, {args.connections} connections, wrk, {args.reps} reps)")
    head = ("endpoint", "req/s median", "(min..max)", "ratio", "p50 ms@1", "p99 ms@1", "(min..max)")
    print("{:10} {:>13} {:>20} {:>6} {:>9} {:>9}  {}".format(*head))
    for name in targets:
        s = summary(through[name])
        lat50, lat99 = summary(p50[name])["median"], summary(p99[name])["median"]
        ratio, low, high = paired_ratio(through[name], through["bare"])
        spread = f"{s['min']:9,.0f}..{s['max']:<9,.0f}"
        print(
            f"{name:10} {s['median']:13,.0f} {spread} {ratio:6.2f} {lat50:9.3f} {lat99:9.3f}"
            f"  {low:.2f}..{high:.2f}"
        )
        results[name] = {
            "rps": s,
            "ratio": ratio,
            "ratio_min": low,
            "ratio_max": high,
            "p50_ms": lat50,
            "p99_ms": lat99,
        }
    for name in ("invoke", "url"):
        added50 = summary(p50[name])["median"] - summary(p50["bare"])["median"]
        added99 = summary(p99[name])["median"] - summary(p99["bare"])["median"]
        results[f"{name}_added_p50_ms"] = added50
        results[f"{name}_added_p99_ms"] = added99
        print(f"{name}: added latency p50 {added50:.3f} ms, p99 {added99:.3f} ms")
    emit("http", results)


if __name__ == "__main__":
    main()
