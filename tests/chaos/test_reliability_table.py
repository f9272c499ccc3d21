"""scripts/reliability_table.py: the table reads back as the rows it was written from, and
``--merge`` keeps an earlier table's rows that a partial run did not produce."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "reliability_table.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reliability_table", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROWS = [
    {
        "name": "kafka-proxy-blackhole-5s",
        "produced": 2400,
        "lost": 0,
        "order_violations": 0,
        "duplicates": 3,
        "duplicate_bound": 160,
        "new_connections": 3,
        "recovered_s": 3.9,
    },
    {
        "name": "sqs-sigkill",
        "produced": 80,
        "lost": 0,
        "order_violations": None,
        "duplicates": 0,
        "duplicate_bound": 60,
        "duplicates_per_kill": 0.0,
    },
]


def test_a_table_reads_back_as_its_rows() -> None:
    script = _script()
    when, rows = script.read_table(script.render(ROWS))
    assert when is not None
    assert sorted(rows, key=lambda r: r["name"]) == [{**row, "when": when} for row in ROWS]


def test_merge_keeps_the_rows_a_partial_run_did_not_make_with_their_dates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    old = tmp_path / "reliability.md"
    first = script.render([{**ROWS[0], "when": "1999-01-01 00:00 UTC"}, ROWS[1]])
    old.write_text(first.replace(" on 20", " on 2000-01-01 00:00 UTC X", 1))
    fresh = {**ROWS[0], "name": "redis-proxy-reset-5s", "recovered_s": 1.5}
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(fresh) + "\n")
    for _ in range(2):  # merging twice keeps each row's own run
        script.main(["--merge", str(old), str(results)])
        old.write_text(capsys.readouterr().out)
    out = old.read_text()
    _, rows = script.read_table(out)
    assert {row["name"]: row["when"] for row in rows if row["name"] != fresh["name"]} == {
        ROWS[0]["name"]: "1999-01-01 00:00 UTC",
        ROWS[1]["name"]: "2000-01-01 00:00 UTC",
    }
    assert "from the run of 1999-01-01 00:00 UTC: kafka-proxy-blackhole-5s." in out
    assert "from the run of 2000-01-01 00:00 UTC: sqs-sigkill." in out
    (again,) = [row for row in rows if row["name"] == fresh["name"]]
    assert {k: v for k, v in again.items() if k != "when"} == fresh
