"""Stand-ins for ``eventrun.abc.BatchControls`` / ``ConnectionModel`` until the config
seam lands on main. Delete this module once ``eventrun.abc`` exports them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ConnectionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchControls(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(100, ge=1, le=10000)
    maximum_batching_window: float = Field(0.5, ge=0, le=300)
    maximum_retry_attempts: int = Field(-1, ge=-1, le=10000)
    report_batch_item_failures: bool = False
    bisect_batch_on_function_error: bool = False
    parallelization_factor: int = Field(1, ge=1, le=10)
    maximum_record_age: float = -1.0
    filter_criteria: Any = None
    on_failure: str | None = None
    on_success: Any = None
