"""What every event parser shares: the normalised ``ObjectEvent``, ``EventParseError``, strict JSON
and the field validators (pure: no ORM, no settings).

Every parser in this package either returns events or raises ``EventParseError`` with a message a
person can act on; nothing else escapes, whatever JSON arrives.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Action = Literal["created", "deleted"]

MAX_KEY_BYTES = 1024  # S3 and R2 key limit
MAX_BUCKET_CHARS = 255
MAX_EVENT_NAME_CHARS = 100
MAX_ETAG_CHARS = 200
MAX_SEQUENCER_CHARS = 100
MAX_SIZE = 2**63 - 1  # what the ledger's BigIntegerField holds
MAX_EVENTS_PER_BODY = 1000
MAX_NESTING = 64


class EventParseError(ValueError):
    """A payload that is not a storage event this service understands; the message says why."""


@dataclass(frozen=True)
class ObjectEvent:
    """One object created or deleted, whatever store and path it came from."""

    action: Action
    event_name: str
    bucket: str
    key: str
    size: int | None
    etag: str
    event_time: datetime | None
    sequencer: str
    payload: dict[str, Any] = field(compare=False, hash=False)

    @property
    def dedupe_key(self) -> str:
        """SHA-256 hex of the normalised fields: the same event via two paths gives the same key."""
        canonical = {
            "action": self.action,
            "event_name": self.event_name,
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "event_time": self.event_time.astimezone(UTC).isoformat() if self.event_time else None,
            "sequencer": self.sequencer,
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- JSON ---------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise EventParseError(f"the body is not strict JSON ({name} is not allowed)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise EventParseError(f"the body holds a number out of range ({text[:20]})")
    return value


def parse_json_bytes(raw: bytes | str) -> Any:
    """Decode a UTF-8 JSON document strictly (no NaN/Infinity); anything else is EventParseError."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise EventParseError(f"the body is not UTF-8 text (byte {exc.start})") from None
    else:
        text = raw.removeprefix("\ufeff")
    if not text.strip():
        raise EventParseError("the body is empty")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except EventParseError:
        raise
    except RecursionError:
        raise EventParseError("the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing a 5000-digit number
        raise EventParseError(f"the body is not JSON: {exc}") from None


# --- field helpers ------------------------------------------------------------------------


def _check_storable(value: Any, where: str, depth: int = 0) -> None:
    """Refuse what a database cannot keep: NUL characters, lone surrogates, absurd nesting."""
    if depth > MAX_NESTING:
        raise EventParseError(f"{where} is nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise EventParseError(f"{where} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise EventParseError(f"{where} contains text that is not valid Unicode") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, where, depth + 1)
            _check_storable(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, where, depth + 1)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EventParseError(f"{what} must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _text(value: Any, what: str, *, limit: int, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise EventParseError(f"{what} must be a string, not {_kind(value)}")
    if required and not value:
        raise EventParseError(f"{what} must not be empty")
    if len(value) > limit:
        raise EventParseError(f"{what} is longer than {limit} characters")
    return value


def _key(value: str, what: str) -> str:
    if not value:
        raise EventParseError(f"{what} must not be empty")
    if "\x00" in value:
        raise EventParseError(f"{what} contains a NUL character")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise EventParseError(f"{what} is not valid Unicode") from None
    if size > MAX_KEY_BYTES:
        raise EventParseError(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    return value


def _size(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventParseError(f"{what} must be a whole number, not {_kind(value)}")
    if value < 0 or value > MAX_SIZE:
        raise EventParseError(f"{what} is out of range")
    return value


def _etag(value: Any, what: str) -> str:
    return _text(value, what, limit=MAX_ETAG_CHARS, required=False).strip().strip('"')


def _time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    text = _text(value, what, limit=64)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise EventParseError(f"{what} is not an ISO 8601 time: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise EventParseError(f"{what} is out of range: {text!r}") from None


def _bounded(items: list[Any], what: str) -> list[Any]:
    if len(items) > MAX_EVENTS_PER_BODY:
        raise EventParseError(f"{what} holds more than {MAX_EVENTS_PER_BODY} events")
    return items


def _decode_body(body: Any, where: str) -> Any:
    """A queue message body: JSON already decoded, a JSON string, or base64 of JSON (tried in that order)."""
    if isinstance(body, dict | list):
        return body
    if not isinstance(body, str):
        raise EventParseError(f"{where} must be an object or a string, not {_kind(body)}")
    try:
        value = parse_json_bytes(body)
    except EventParseError as exc:
        json_error: EventParseError | None = exc
    else:
        if isinstance(value, dict | list):
            return value
        json_error = None
    try:
        decoded = base64.b64decode(body.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EventParseError(f"{where} is neither JSON nor base64 of JSON: {json_error or 'not an object'}") from None
    try:
        return parse_json_bytes(decoded)
    except EventParseError as exc:
        raise EventParseError(f"{where} is base64 but not of JSON: {exc}") from None
