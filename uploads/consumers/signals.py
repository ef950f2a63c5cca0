"""What every consumer loop shares: graceful stop, and surviving an outage of its queue."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

from django.conf import settings

from uploads.consumers.backoff import Backoff
from uploads.consumers.health import HealthReporter
from uploads.consumers.recording import Tally

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    busy: bool

    def stop(self) -> None: ...


class StoppableLoop:
    """The receive loop every consumer runs: stop requests, backoff through outages, heartbeat.

    A consumer says how to ``poll`` its queue once (receive, record, acknowledge), which errors
    mean its queue did not answer (``receive_errors``), and how long to wait after an empty
    receive when its queue has no long poll (``idle_seconds``).
    """

    name = ""  # the consumer's name in /healthz and /metrics
    receive_errors: tuple[type[Exception], ...] = ()
    idle_seconds = 0.0

    def __init__(self, *, backoff: Backoff | None = None) -> None:
        self.stopping = threading.Event()
        # True while received messages are being recorded and acknowledged: not a moment to exit.
        self.busy = False
        self.backoff = backoff or Backoff(cap=settings.CONSUMER_BACKOFF_MAX_SECONDS)
        self.health = HealthReporter(self.name)

    def stop(self) -> None:
        self.stopping.set()

    def poll(self, *, once: bool) -> Tally:
        """One receive: record what came, acknowledge what was recorded; raise a ``receive_errors`` one."""
        raise NotImplementedError

    def run(self, *, once: bool = False) -> Tally:
        """Consume until stopped, riding out queue outages; with ``once``, until the queue answers empty.

        ``once`` is a drain for an operator or a test: a receive error ends it (and leaves the
        running service's heartbeat alone).
        """
        total = Tally()
        if not once:
            self.health.started()
        while not self.stopping.is_set():
            try:
                tally = self.poll(once=once)
            except self.receive_errors as exc:
                if once:
                    raise
                self.receive_failed(exc)
                continue
            if not once:
                self.receive_succeeded()
            total.add(tally)
            if tally.messages:
                log.info("%s: %s", self.name, tally)
            if once and (tally.messages == 0 or tally.failed == tally.messages):
                break
            if not tally.messages and self.idle_seconds:
                self.stopping.wait(self.idle_seconds)
        return total

    def receive_failed(self, reason: Exception) -> None:
        """Count, log and report a failed receive, then wait out the backoff (a stop cuts it short)."""
        delay = self.backoff.failed()
        self.health.error(str(reason))
        log.warning(
            "%s consumer: %s (%d in a row); trying again in %.1f s", self.name, reason, self.backoff.failures, delay
        )
        self.stopping.wait(delay)

    def receive_succeeded(self) -> None:
        if self.backoff.failures:
            log.info("%s consumer: the queue answers again after %d errors", self.name, self.backoff.failures)
        self.backoff.reset()
        self.health.ok()


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
