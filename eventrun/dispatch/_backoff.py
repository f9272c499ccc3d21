"""Retry delays: exponential backoff with full jitter. Pure, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(slots=True, frozen=True)
class Backoff:
    """``delay(n)`` for the n-th retry (1-based): ``base * 2**(n-1)`` capped at ``cap``,
    scaled by a random factor in ``[1 - jitter, 1]`` so retries of many lanes spread out."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        raw: float = min(self.cap_s, self.base_s * 2.0 ** min(max(0, attempt - 1), 60))
        return raw * (1.0 - self.jitter * random.random())
