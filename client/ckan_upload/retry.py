"""Exponential backoff with full jitter, interruptible by the cancel event."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from ckan_upload.slices import Cancelled


@dataclass(frozen=True)
class Backoff:
    """Attempt ``n`` (from 0) waits a random time in [0, min(cap, base * 2**n)]."""

    base: float = 0.5
    cap: float = 30.0
    attempts: int = 8

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``attempt + 1``: full jitter spreads parallel parts apart."""
        ceiling = min(self.cap, self.base * (2**attempt))
        return (rng or random).uniform(0, ceiling)

    def sleep(self, attempt: int, cancel: threading.Event) -> None:
        """Wait before the next attempt; raise Cancelled if interrupted meanwhile."""
        if cancel.wait(self.delay(attempt)):
            raise Cancelled


RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_retryable_status(status: int, body: str = "") -> bool:
    """Whether an HTTP answer is worth trying again (S3 says RequestTimeout with a 400)."""
    return status in RETRYABLE_STATUS or (status == 400 and "RequestTimeout" in body)
