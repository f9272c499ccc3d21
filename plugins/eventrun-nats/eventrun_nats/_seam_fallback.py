"""TEMPORARY stand-ins for ``eventrun.abc``'s config bases, used only while the installed
eventrun predates the plugin config seam (delete with the seam on main)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["BatchControls", "ConnectionModel", "Duration", "TriggerModel"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError("must be a duration like 500ms, 5s, 2m or a number of seconds")
        return float(match[1]) * _UNITS[match[2] or "s"]
    return value


Duration = Annotated[float, BeforeValidator(_seconds)]


class TriggerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionModel(TriggerModel):
    pass


class BatchControls(TriggerModel):
    batch_size: int = Field(100, ge=1, le=10000)
    maximum_batching_window: Annotated[Duration, Field(ge=0, le=300)] = 0.5
    maximum_retry_attempts: int = Field(-1, ge=-1, le=10000)
    report_batch_item_failures: bool = False
    bisect_batch_on_function_error: bool = False
    parallelization_factor: int = Field(1, ge=1, le=10)
    maximum_record_age: float = -1.0
    filter_criteria: Any = None
    on_failure: str | None = None
    on_success: str | None = None
