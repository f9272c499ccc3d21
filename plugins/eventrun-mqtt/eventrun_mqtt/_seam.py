"""The config bases of eventrun's plugin seam, with stand-ins until the core has them.

The core exports ``TriggerModel``, ``BatchControls``, ``ConnectionModel`` and ``Duration``
from :mod:`eventrun.abc` (docs/plugins.md). This module re-exports them; on a core that
predates that seam it defines minimal equivalents (pydantic models that forbid unknown
keys, Lambda's dispatcher keys and defaults) so the plugin still imports and its
poller/sink work when driven directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["BatchControls", "ConnectionModel", "Duration", "TriggerModel"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        for unit in ("ms", "s", "m", "h"):
            if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
                return float(text[: -len(unit)]) * _UNITS[unit]
    return value


if TYPE_CHECKING:
    from eventrun.abc import (  # type: ignore[attr-defined,unused-ignore]
        BatchControls,
        ConnectionModel,
        Duration,
        TriggerModel,
    )
else:
    try:
        from eventrun.abc import BatchControls, ConnectionModel, Duration, TriggerModel
    except ImportError:  # a core without the config seam
        Duration = Annotated[float, BeforeValidator(_seconds)]

        class TriggerModel(BaseModel):
            model_config = ConfigDict(extra="forbid", frozen=True)

        class ConnectionModel(TriggerModel):
            pass

        class BatchControls(TriggerModel):
            batch_size: int = Field(100, ge=1, le=10000)
            maximum_batching_window: Duration = Field(0.5, ge=0, le=300)
            maximum_retry_attempts: int = Field(-1, ge=-1, le=10000)
            report_batch_item_failures: bool = False
            bisect_batch_on_function_error: bool = False
            parallelization_factor: int = Field(1, ge=1, le=10)
            maximum_record_age: Duration = -1.0
            filter_criteria: Any = None
            on_failure: str | None = None
            on_success: Any = None
