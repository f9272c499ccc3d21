"""The config bases of the plugin seam (``eventrun.abc``).

TEMPORARY: until the core's config seam is on main, an eventrun without
``eventrun.abc.BatchControls`` gets the stand-ins of :mod:`eventrun_nats._seam_fallback`
(same names and defaults). Once the seam is merged this module is only the import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventrun_nats._seam_fallback import (
        BatchControls,
        ConnectionModel,
        Duration,
        TriggerModel,
    )
else:
    try:
        from eventrun.abc import BatchControls, ConnectionModel, Duration, TriggerModel
    except ImportError:
        from eventrun_nats._seam_fallback import (
            BatchControls,
            ConnectionModel,
            Duration,
            TriggerModel,
        )

__all__ = ["BatchControls", "ConnectionModel", "Duration", "TriggerModel"]
