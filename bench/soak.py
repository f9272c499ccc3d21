"""Soak: mixed load against one ``eventrun run`` daemon for N minutes; RSS and open file
descriptors of the daemon and its workers must stay flat.

    .venv/bin/python -m bench.soak [--minutes 30] [--sample 10] [--tolerance 25]
                                   [--tracemalloc 600] [--memtrace-file PATH]

Starts a private ``redis-server`` and the daemon (subprocess) with four functions:
``api`` (HTTP invokes, sync and ``Event``), ``stream`` (a Redis Streams trigger), ``tick``
(cron every second) and ``files`` (file-watch). The load loop, bounded by the deadline,
sends about 20 sync invokes, 5 async invokes, 200 stream entries and 2 file drops per
second (dropped files are deleted again later). Every ``--sample`` seconds it records
RSS (MiB) and open fds of the daemon and of all its descendants (the workers), from
/proc. At the end it prints the curve and asserts flatness: the average of the last third
of the samples is within ``--tolerance`` percent of the first third's (the first
sample, taken during warm-up, is excluded), and every stream entry was acknowledged.
Exit status 1 when a check fails.

It also prints the slope of the daemon's RSS (MiB per minute, a least-squares line over
the samples after the first tenth of the run) and, with ``--tracemalloc SECONDS``, the
daemon's own tracemalloc reports (``EVENTRUN_TRACEMALLOC``, eventrun/observe/_memtrace.py):
the Python memory traced at every snapshot, its slope, and the tracebacks that grew most
since the first snapshot and over the last interval. RSS growing while the traced total
stays flat is the allocator (fragmentation, arenas); a traced total growing with it is a
leak, and the tracebacks say where. The environment passes through to the daemon, so
``MALLOC_ARENA_MAX=2 python -m bench.soak ...`` compares allocator settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench._procs import daemon, free_port, wait_port, write_app

CONFIG = """
connections:
  redis: {{main: {{url: "{url}"}}}}
store: {{url: "sqlite:///state.db"}}
functions:
  api:
    handler: fns:api
    concurrency: 4
    min_warm: 1
  stream:
    handler: fns:stream
    concurrency: 2
    triggers:
      - redis_streams: {{connection: main, streams: [soak], group: g, batch_size: 50}}
  tick:
    handler: fns:tick
    triggers:
      - cron: {{schedule: "* * * * * *"}}
  files:
    handler: fns:files
    triggers:
      - filewatch: {{path: drop, settle: 200ms}}
"""
FNS = """
def api(event, context):
    return {"echo": event.get("n"), "blob": "x" * 512}


def stream(event, context):
    return None


def tick(event, context):
    return None


def files(event, context):
    return len(event["Records"])
"""


@dataclass
class Sample:
    t_s: float
    daemon_rss_mib: float
    worker_rss_mib: float
    daemon_fds: int
    worker_fds: int
    workers: int


def _children(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def sample(pid: int, started: float) -> Sample:
    kids = _children(pid)
    return Sample(
        t_s=time.monotonic() - started,
        daemon_rss_mib=_rss_mib(pid),
        worker_rss_mib=sum(_rss_mib(k) for k in kids),
        daemon_fds=_fds(pid),
        worker_fds=sum(_fds(k) for k in kids),
        workers=len(kids),
    )


def flat(values: list[float], tolerance_pct: float) -> tuple[bool, float, float]:
    """(ok, first-third average, last-third average), ignoring the warm-up sample."""
    body = values[1:] if len(values) > 3 else values
    third = max(1, len(body) // 3)
    first, last = statistics.fmean(body[:third]), statistics.fmean(body[-third:])
    return last <= first * (1 + tolerance_pct / 100) + 1, first, last


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute (0 with < 2 points)."""
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return 0.0
    fit = statistics.linear_regression([t for t, _ in points], [v for _, v in points])
    return fit.slope * 60


def run(
    minutes: float,
    sample_s: float,
    tolerance_pct: float,
    tracemalloc_s: float = 0.0,
    memtrace_file: str | None = None,
) -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: apt-get install redis-server", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="eventrun-soak-") as tmp:
        root = Path(tmp)
        rport = free_port()
        server = subprocess.Popen(
            [binary, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(rport, server)
            url = f"redis://127.0.0.1:{rport}/0"
            (root / "drop").mkdir()
            config = write_app(root, CONFIG.format(url=url), {"fns.py": FNS})
            port = free_port()
            env: dict[str, str] = {}
            trace_path = Path(memtrace_file) if memtrace_file else root / "memtrace.jsonl"
            if tracemalloc_s > 0:
                trace_path.unlink(missing_ok=True)
                env = {
                    "EVENTRUN_TRACEMALLOC": str(tracemalloc_s),
                    "EVENTRUN_TRACEMALLOC_FILE": str(trace_path),
                }
            with daemon(config, port, env=env) as proc:
                status = _load(proc.pid, port, url, root / "drop", minutes, sample_s, tolerance_pct)
            if tracemalloc_s > 0:
                _memtrace_report(trace_path)
            return status
        finally:
            server.terminate()
            server.wait(10)


def _load(
    pid: int, port: int, url: str, drop: Path, minutes: float, sample_s: float, tol: float
) -> int:
    client = redis.Redis.from_url(url)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    invoke = "/2015-03-31/functions/api/invocations"
    started = time.monotonic()
    deadline = started + minutes * 60
    samples = [sample(pid, started)]
    next_sample = started + sample_s
    produced = errors = n = 0
    files: list[Path] = []
    try:
        while time.monotonic() < deadline:
            tick = time.monotonic()
            for _ in range(20):
                r = http.post(invoke, json={"n": n})
                errors += r.status_code != 200
                n += 1
            for _ in range(5):
                r = http.post(invoke, json={"n": n}, headers={"X-Amz-Invocation-Type": "Event"})
                errors += r.status_code != 202
            with client.pipeline(transaction=False) as pipe:
                for i in range(200):
                    pipe.xadd("soak", {"n": str(produced + i)}, maxlen=20000)
                pipe.execute()
            produced += 200
            for _ in range(2):
                path = drop / f"f{n}-{len(files)}.txt"
                path.write_text("soak")
                files.append(path)
            while len(files) > 50:
                files.pop(0).unlink(missing_ok=True)
            if time.monotonic() >= next_sample:
                samples.append(sample(pid, started))
                s = samples[-1]
                print(
                    f"t={s.t_s:6.0f}s daemon {s.daemon_rss_mib:6.1f} MiB {s.daemon_fds:4d} fds | "
                    f"{s.workers} workers {s.worker_rss_mib:6.1f} MiB {s.worker_fds:4d} fds",
                    flush=True,
                )
                next_sample += sample_s
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        drained = False
        for _ in range(600):
            groups = client.xinfo_groups("soak")
            if groups and groups[0]["pending"] == 0 and groups[0]["lag"] == 0:
                drained = True
                break
            time.sleep(0.1)
    finally:
        http.close()
        client.close()
    return _report(samples, produced, n, errors, drained, tol)


def _report(
    samples: list[Sample], produced: int, invokes: int, errors: int, drained: bool, tol: float
) -> int:
    ok = drained and errors == 0
    print(f"\nload: {invokes} sync invokes, {produced} stream entries, {errors} HTTP errors")
    print(f"stream drained: {drained}")
    results: dict[str, object] = {"samples": [s.__dict__ for s in samples]}
    for field in ("daemon_rss_mib", "worker_rss_mib", "daemon_fds", "worker_fds"):
        good, first, last = flat([getattr(s, field) for s in samples], tol)
        ok &= good
        verdict = "flat" if good else "GROWING"
        print(f"{field:16s} first third {first:8.1f}  last third {last:8.1f}  {verdict}")
        results[field] = {"first_third": first, "last_third": last, "flat": good}
    body = [(s.t_s, s.daemon_rss_mib) for s in samples if s.t_s >= samples[-1].t_s / 10]
    slope = slope_per_min(body)
    print(f"daemon RSS slope {slope:+.4f} MiB/min (after the first tenth of the run)")
    results["daemon_rss_slope_mib_per_min"] = round(slope, 4)
    print(json.dumps({"bench": "soak", "ok": ok, **results}))
    return 0 if ok else 1


def _memtrace_report(path: Path) -> None:
    """Print the daemon's tracemalloc reports (one JSON line per snapshot)."""
    if not path.exists():
        print("no tracemalloc report (the run ended before the first snapshot?)")
        return
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print("\ntracemalloc snapshots (daemon):")
    for line in lines:
        print(
            f"t={line['t_s']:7.0f}s rss {line['rss_mib']:7.2f} MiB sqlite "
            f"{line.get('sqlite_mib') or 0:6.2f} MiB traced "
            f"{line['traced_mib']:7.3f} MiB ({line['traced_diff_kib']:+9.1f} KiB since first; "
            f"cyclic garbage {sum(line['gc_garbage'].values()):5d} objects), "
            f"tracemalloc's own {line['tracemalloc_own_mib']:6.2f} MiB"
        )
    traced = slope_per_min([(line["t_s"], line["traced_mib"]) for line in lines[1:]])
    rss = slope_per_min([(line["t_s"], line["rss_mib"]) for line in lines[1:]])
    print(f"slopes after the first snapshot: traced {traced:+.4f}, rss {rss:+.4f} MiB/min")
    if len(lines) < 2:
        return
    for key, title in (("top", "since the first snapshot"), ("top_since_last", "last interval")):
        print(f"\ngrowth by traceback, {title}:")
        for stat in lines[-1][key][:8]:
            print(f"  {stat['size_diff_kib']:+9.1f} KiB {stat['count_diff']:+7d} blocks")
            for frame in stat["traceback"][-4:]:
                print(f"      {frame}")
    print(json.dumps({"bench": "soak-tracemalloc", "traced_slope": traced, "rss_slope": rss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--tolerance", type=float, default=25.0, help="percent")
    parser.add_argument(
        "--tracemalloc", type=float, default=0.0, help="seconds between daemon snapshots (0: off)"
    )
    parser.add_argument("--memtrace-file", help="keep the daemon's tracemalloc JSON lines here")
    args = parser.parse_args()
    sys.exit(run(args.minutes, args.sample, args.tolerance, args.tracemalloc, args.memtrace_file))


if __name__ == "__main__":
    main()
