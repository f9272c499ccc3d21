"""Memory: RSS of an idle daemon with 10 functions, and what each warm worker costs.

    python -m bench.memory

Workers are forked from the daemon's zygote, so much of their memory is shared
copy-on-write pages; besides RSS we report USS (pages private to the process, from
/proc/PID/smaps_rollup), which is what one more warm worker really adds, and PSS (each
shared page divided among the processes that map it), whose sum over the daemon and its
zygote is the memory they take together (a sum of RSS counts the interpreter's and the
libraries' shared pages twice).
"""

from __future__ import annotations

import os
import statistics
import struct
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


def _pss_kb(pid: int) -> int:
    return _kb(pid, "Pss", "smaps_rollup")


_PFN_MASK = (1 << 55) - 1
_PRESENT = 1 << 63


def _union_rss_mb(pids: list[int]) -> float | None:
    """Resident memory of ``pids`` together, each physical page counted once (what a sum
    of RSS double-counts: the interpreter and libraries both processes map). Reads the
    page frame numbers from /proc/PID/pagemap, which needs CAP_SYS_ADMIN: None without."""
    page = os.sysconf("SC_PAGE_SIZE")
    frames: set[int] = set()
    for pid in pids:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if line.rstrip().endswith("[vsyscall]"):
                    continue
                pagemap.seek(start // page * 8)
                data = pagemap.read((end - start) // page * 8)
                for (entry,) in struct.iter_unpack("<Q", data):
                    if entry & _PRESENT:
                        frames.add(entry & _PFN_MASK)
    if frames == {0}:
        return None  # PFNs hidden from an unprivileged reader
    return len(frames) * page / 1024 / 1024


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
        results["idle_zygotes"] = len(kids)
        results["idle_zygote_rss_mb"] = sum(_kb(k, "VmRSS") for k in kids) / 1024
        results["idle_total_rss_mb"] = (
            _kb(proc.pid, "VmRSS") + sum(_kb(k, "VmRSS") for k in kids)
        ) / 1024
        union = _union_rss_mb([proc.pid, *kids])
        if union is not None:
            results["idle_total_rss_mb_shared_once"] = union
        results["idle_total_pss_mb"] = (_pss_kb(proc.pid) + sum(_pss_kb(k) for k in kids)) / 1024
    warm = write_app(tmp / "warm", _config(1), {"app.py": HANDLER})
    port = free_port()
    with daemon(warm, port) as proc:
        time.sleep(2)
        kids = _descendants(proc.pid)
        workers = [k for k in kids if _children(k) == [] and _kb(k, "VmRSS")]
        # the zygote has worker children; workers have none
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
