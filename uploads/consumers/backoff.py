"""Capped exponential backoff with jitter, shared by every consumer (and by `serve`'s restarts)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """The n-th failure in a row waits a random time between half and all of min(cap, base * 2**(n-1)).

    The jitter keeps several consumers (or a restarted fleet) from retrying in step against a
    queue that is coming back; the lower half bound keeps the wait from collapsing to nothing.
    """

    base: float = 1.0
    cap: float = 60.0
    failures: int = 0
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def failed(self) -> float:
        """Count one more failure and return the seconds to wait before trying again."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.failures - 1, 32))
        return ceiling / 2 + self.rng() * ceiling / 2

    def reset(self) -> None:
        self.failures = 0
