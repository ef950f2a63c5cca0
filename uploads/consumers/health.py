"""Consumer heartbeats in the database: written by the consumer processes, read by /healthz and /metrics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import F
from django.utils import timezone

from uploads.models import ConsumerHealth, EventSource

log = logging.getLogger(__name__)

# A healthy consumer still writes at most this often (one UPDATE per interval, not per poll).
HEARTBEAT_SECONDS = 10.0
REASON_MAX_CHARS = 255


class HealthReporter:
    """What one consumer process says about itself; a database outage never stops the consumer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._last_write = 0.0
        self._row_says_ok = False

    def _write(self, **fields: object) -> None:
        try:
            if not ConsumerHealth.objects.filter(name=self.name).update(**fields):
                ConsumerHealth.objects.get_or_create(name=self.name)
                ConsumerHealth.objects.filter(name=self.name).update(**fields)
        except DatabaseError as exc:
            log.warning("could not write the %s consumer's heartbeat: %s", self.name, type(exc).__name__)
            close_old_connections()
            return
        self._last_write = time.monotonic()

    def started(self) -> None:
        """A new process: a fresh heartbeat, the error streak of the last one forgotten."""
        now = timezone.now()
        self._row_says_ok = False
        self._write(started_at=now, heartbeat_at=now, consecutive_errors=0)

    def ok(self) -> None:
        """The queue answered; written at once after a start or errors, else at most every HEARTBEAT_SECONDS."""
        if self._row_says_ok and time.monotonic() - self._last_write < HEARTBEAT_SECONDS:
            return
        now = timezone.now()
        self._row_says_ok = True
        self._write(heartbeat_at=now, last_ok_at=now, consecutive_errors=0)

    def error(self, reason: str) -> None:
        """The queue could not be read: count it and keep the (secret-free) reason."""
        now = timezone.now()
        self._row_says_ok = False
        self._write(
            heartbeat_at=now,
            last_error_at=now,
            last_error=reason[:REASON_MAX_CHARS],
            consecutive_errors=F("consecutive_errors") + 1,
            receive_errors_total=F("receive_errors_total") + 1,
        )


@dataclass(frozen=True)
class ConsumerStatus:
    """One consumer as /healthz and /metrics show it."""

    name: str
    check: str  # "ok", "starting" or "error: ..."
    row: ConsumerHealth | None

    @property
    def up(self) -> bool:
        return self.check in ("ok", "starting")


def configured_consumers() -> list[str]:
    """The consumers this deployment runs (`serve` starts one per configured queue)."""
    names = []
    if settings.SQS_QUEUE_URL:
        names.append(EventSource.SQS.value)
    if settings.CF_QUEUE_ID:
        names.append(EventSource.R2_QUEUE.value)
    if settings.AZURE_EVENTS_QUEUE:
        names.append(EventSource.AZURE_QUEUE.value)
    return names


def describe(name: str, row: ConsumerHealth | None, now: datetime) -> ConsumerStatus:
    """Judge one consumer from its row: failing, silent for too long, starting, or ok."""
    if row is None:
        return ConsumerStatus(name, "error: no heartbeat yet (is the consumer running?)", None)
    if row.consecutive_errors:
        since = row.last_error_at.isoformat(timespec="seconds") if row.last_error_at else "?"
        check = f"error: {row.last_error} ({row.consecutive_errors} in a row, last at {since})"
        return ConsumerStatus(name, check, row)
    silent = (now - row.heartbeat_at).total_seconds()
    if silent > settings.CONSUMER_STALE_SECONDS:
        return ConsumerStatus(name, f"error: no heartbeat for {silent:.0f} s", row)
    if row.last_ok_at is None or row.last_ok_at < row.started_at:
        return ConsumerStatus(name, "starting", row)
    return ConsumerStatus(name, "ok", row)


def consumer_statuses(names: list[str] | None = None) -> list[ConsumerStatus]:
    """The named consumers (default: every one with a row, plus the configured ones), by name."""
    rows = {row.name: row for row in ConsumerHealth.objects.all()}
    wanted = sorted(set(rows) | set(configured_consumers())) if names is None else names
    now = timezone.now()
    return [describe(name, rows.get(name), now) for name in wanted]
