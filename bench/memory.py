"""Memory: RSS of an idle daemon with 10 functions, and what each warm worker costs.

    python -m bench.memory

Workers are forked from a per-function template, so much of their memory is shared
copy-on-write pages; besides RSS we report USS (pages private to the process, from
/proc/PID/smaps_rollup), which is what one more warm worker really adds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench._procs import daemon, emit, free_port, write_app

HANDLER = """
import json

def handler(event, context):
    return {"ok": True}
"""


def _config(warm: int) -> str:
    lines = [
        "server: {host: 127.0.0.1, port: 9000, auth: {mode: none}}",
        'store: {url: "sqlite:///state.db"}',
        "functions:",
    ]
    for i in range(10):
        lines += [
            f"  fn{i}:",
            "    handler: app.handler",
            f"    min_warm: {warm}",
            "    triggers:",
            f"      - http: {{path: /fn{i}, auth: none}}",
        ]
    return "\n".join(lines) + "\n"


def _kb(pid: int, field: str, source: str = "status") -> int:
    path = f"/proc/{pid}/{source}"
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _uss_kb(pid: int) -> int:
    return _kb(pid, "Private_Clean", "smaps_rollup") + _kb(pid, "Private_Dirty", "smaps_rollup")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out += [int(c) for c in children]
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="eventrun-bench-mem-"))
    results: dict[str, float] = {}
    idle = write_app(tmp / "idle", _config(0), {"app.py": HANDLER})
    port = free_port()
    with daemon(idle, port) as proc:
        time.sleep(2)
        results["idle_daemon_rss_mb"] = _kb(proc.pid, "VmRSS") / 1024
        kids = _descendants(proc.pid)
        results["idle_templates"] = len(kids)
        results["idle_total_rss_mb"] = (
            _kb(proc.pid, "VmRSS") + sum(_kb(k, "VmRSS") for k in kids)
        ) / 1024
    warm = write_app(tmp / "warm", _config(1), {"app.py": HANDLER})
    port = free_port()
    with daemon(warm, port) as proc:
        time.sleep(2)
        kids = _descendants(proc.pid)
        workers = [k for k in kids if _children(k) == [] and _kb(k, "VmRSS")]
        # the per-function templates have worker children; workers have none
        rss = [_kb(k, "VmRSS") / 1024 for k in workers]
        uss = [_uss_kb(k) / 1024 for k in workers]
        results["warm_workers"] = len(workers)
        results["worker_rss_mb_median"] = statistics.median(rss) if rss else 0.0
        results["worker_uss_mb_median"] = statistics.median(uss) if uss else 0.0
        results["daemon_rss_mb_with_workers"] = _kb(proc.pid, "VmRSS") / 1024
    print("Memory (10 functions)")
    for key, value in results.items():
        print(f"  {key:32} {value:8.1f}")
    emit("memory", results)


if __name__ == "__main__":
    main()
