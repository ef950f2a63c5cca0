"""Record one queue message (all its events, or the raw message when unreadable) in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

from uploads.events import EventParseError, ObjectEvent
from uploads.services import ingest


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


@transaction.atomic
def record_message(*, source: str, raw_body: str | bytes, parse: Callable[[], list[ObjectEvent]]) -> Tally:
    """Parse and record a message; an unreadable one is kept raw. Commits before returning."""
    tally = Tally(messages=1)
    try:
        events = parse()
    except EventParseError as exc:
        result = ingest.record_unparseable(source=source, raw_body=raw_body, error=str(exc))
        tally.unparseable = 1
        tally.duplicates = int(result.duplicate)
        return tally
    for event in events:
        recorded = ingest.record_event(source=source, event=event)
        tally.events += 1
        tally.duplicates += recorded.duplicate
        tally.unmatched += recorded.unmatched
    return tally
