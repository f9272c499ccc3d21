"""Write docs/reliability.md from the figures a chaos run recorded.

``make chaos`` runs tests/chaos with ``EVENTRUN_RELIABILITY_LOG`` set; every verdict
(tests/chaos/_ledger.py) appends one JSON line there. This turns the lines into one table,
fault by source, with the run's date and machine, so the published figures are the suite's
own and regenerate with it.

    python scripts/reliability_table.py RESULTS.jsonl > docs/reliability.md
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    print("# Reliability: what each fault does to each source\n")
    print(
        "Produced by `make chaos` (tests/chaos, long variants included) on "
        f"{when}, {platform.system()} {platform.machine()}, {cpus} CPUs, Python "
        f"{platform.python_version()}. Regenerate: `make chaos`.\n"
    )
    print(
        "Lost must be 0; order violations must be 0 where the source promises order "
        "(n/a: SQS standard queues promise none); duplicates stay within the in-flight "
        "bound in brackets (tests/chaos/_ledger.py derives it). For the SIGKILL rows the "
        "bound is measured, not derived: the records the handler had started in the "
        "killed daemon's life and whose acknowledgement the broker had not received, "
        "asked of the broker right after each kill (`in_flight_at_kills`, per kill); "
        "each kill's must stay within two batches per lane (`structural_bound`, for all "
        "kills). `recovered_s`: from healing to the last record handled.\n"
    )
    print("| fault / source | produced | lost | order violations | duplicates (bound) | other |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    known = {"name", "produced", "lost", "order_violations", "duplicates", "duplicate_bound"}
    for row in sorted(rows, key=lambda r: r["name"]):
        order = "n/a" if row["order_violations"] is None else row["order_violations"]
        other = ", ".join(
            f"{k}={round(v, 1) if isinstance(v, float) else v}"
            for k, v in row.items()
            if k not in known
        )
        print(
            f"| {row['name']} | {row['produced']} | {row['lost']} | {order} "
            f"| {row['duplicates']} ({row['duplicate_bound']}) | {other} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
