"""docs/configuration.md is generated from the config models and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from eventrun import config
from eventrun.config._docgen import EXAMPLE, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `make docs` "
        "(python -m eventrun.config._docgen > docs/configuration.md)"
    )


def test_module_entry_point_prints_the_reference() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "eventrun.config._docgen"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout == render()


def test_every_model_key_is_documented() -> None:
    text = render()
    for model in (
        config.Config,
        config.FunctionConfig,
        config.KafkaTrigger,
        config.SqsTrigger,
        config.RedisStreamsTrigger,
        config.HttpTrigger,
        config.CronTrigger,
        config.FilewatchTrigger,
        config.KafkaConnection,
        config.SqsConnection,
    ):
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in text, (model.__name__, name)
            assert field.description, (model.__name__, name)
    assert "| `timeout` | duration | `3s` | 1s..15m |" in text
    assert "| `batch_size` | integer | `10` | 1..10000 |" in text


def test_full_example_loads() -> None:
    cfg = config.parse_config(EXAMPLE, filename="example.yaml", environ={})
    kinds = sorted({t.kind for f in cfg.functions.values() for t in f.triggers})
    assert kinds == sorted(config.TRIGGER_KINDS)


def test_optional_union_keeps_every_member() -> None:
    """``A | B | None`` documents as "A or B" (no config field has that shape yet)."""
    from eventrun.config._docgen import _type_text

    assert _type_text(str | list[str] | None) == "string or list of string"
    assert _type_text(int | None) == "integer"


def test_plain_pydantic_bounds_show_as_allowed_values() -> None:
    """Plugins bound their fields with ``Field(ge=..., le=...)``: the reference shows them."""
    from pydantic import BaseModel, Field

    from eventrun.config import Duration
    from eventrun.config._docgen import _allowed_text

    class Demo(BaseModel):
        both: int = Field(1, ge=1, le=65535)
        low: int = Field(1, gt=0)
        wait: Duration = Field(30.0, ge=1, le=3600)

    fields = Demo.model_fields
    assert _allowed_text(fields["both"]) == "1..65535"
    assert _allowed_text(fields["low"]) == "> 0"
    assert _allowed_text(fields["wait"]) == "1s..1h"
