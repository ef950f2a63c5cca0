"""Graceful stop for the consumer commands."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol


class Stoppable(Protocol):
    busy: bool

    def stop(self) -> None: ...


class StoppableLoop:
    """What every consumer loop shares: a stop request, and whether a batch is in hand."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        # True while received messages are being recorded and acknowledged: not a moment to exit.
        self.busy = False

    def stop(self) -> None:
        self.stopping.set()


@contextmanager
def stop_on_signals(consumer: Stoppable) -> Iterator[None]:
    """On SIGTERM/SIGINT finish the batch in hand (record, then ack) and exit.

    While the consumer is only waiting on its queue, exit at once: anything received but not
    yet recorded returns to the queue after its visibility timeout.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        consumer.stop()
        if not consumer.busy:
            raise SystemExit(0)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
