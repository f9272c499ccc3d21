"""Test kit: in-memory sources and sinks and a fake clock, honouring the real semantics.

Users and eventrun's own tests drive the real dispatcher with these instead of brokers::

    from eventrun.testing import FakeClock, MemoryQueue, MemorySink, MemoryStream
"""

from __future__ import annotations

from eventrun.testing._clock import FakeClock
from eventrun.testing._memory import MemoryQueue, MemorySink, MemoryStream

__all__ = ["FakeClock", "MemoryQueue", "MemorySink", "MemoryStream"]
