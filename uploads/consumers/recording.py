"""Record queue messages (all their events, or the raw message when unreadable), a batch at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import close_old_connections, transaction

from uploads.events import EventParseError, ObjectEvent
from uploads.services import ingest

log = logging.getLogger(__name__)


@dataclass
class Tally:
    """What a consumer did, for its log line and its tests."""

    messages: int = 0
    events: int = 0
    duplicates: int = 0
    unmatched: int = 0
    unparseable: int = 0
    failed: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __str__(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in self.__dataclass_fields__)


@dataclass(frozen=True)
class Message:
    """One queue message: its raw body (kept when unreadable) and how to parse it."""

    raw_body: str | bytes
    parse: Callable[[], list[ObjectEvent]]
    id: str = ""  # the queue's message id, for the log


def _items(message: Message) -> list[ObjectEvent | ingest.Unreadable]:
    try:
        return list(message.parse())
    except EventParseError as exc:
        return [ingest.Unreadable(raw_body=message.raw_body, error=str(exc))]


@transaction.atomic
def _record(source: str, parsed: list[list[ObjectEvent | ingest.Unreadable]]) -> list[Tally]:
    """Record every message's items in one batch (one transaction); one tally per message."""
    flat = [item for items in parsed for item in items]
    results = ingest.record_batch(source=source, items=flat) if flat else []
    tallies, at = [], 0
    for items in parsed:
        tally = Tally(messages=1)
        for item, result in zip(items, results[at : at + len(items)], strict=True):
            if isinstance(item, ingest.Unreadable):
                tally.unparseable += 1
            else:
                tally.events += 1
                tally.unmatched += result.unmatched
            tally.duplicates += result.duplicate
        at += len(items)
        tallies.append(tally)
    return tallies


def record_messages(*, source: str, messages: Sequence[Message]) -> list[Tally]:
    """Parse and record messages, committed before returning; one tally per message, in order.

    The whole batch is one set of statements. When it cannot be recorded (a database error),
    each message is tried on its own, so one message the database refuses costs a retry of
    itself (tally ``failed=1``), not of its batch.
    """
    parsed = [_items(message) for message in messages]
    try:
        return _record(source, parsed)
    except Exception:
        if len(parsed) == 1:
            log.exception("could not record %s message %s; it will be delivered again", source, messages[0].id)
            close_old_connections()
            return [Tally(messages=1, failed=1)]
        log.warning("could not record a batch of %d %s messages; recording them one by one", len(parsed), source)
        close_old_connections()
    tallies = []
    for message, items in zip(messages, parsed, strict=True):
        try:
            tallies += _record(source, [items])
        except Exception:
            log.exception("could not record %s message %s; it will be delivered again", source, message.id)
            close_old_connections()
            tallies.append(Tally(messages=1, failed=1))
    return tallies
