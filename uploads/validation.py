"""Pure checks of client input and the object key layout (no ORM, no I/O)."""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from dataclasses import dataclass

MAX_SINGLE_PUT_BYTES = 5 * 1024**3  # S3 and R2 refuse a single PUT above 5 GiB
# Multipart rules shared by S3 and R2: parts of 5 MiB to 5 GiB (the last may be smaller), all
# but the last the same size, at most 10,000 of them.
MIN_PART_BYTES = 5 * 1024**2
MAX_PART_BYTES = 5 * 1024**3
MAX_PARTS = 10_000
_MIB = 1024**2
MAX_DECLARED_SIZE = 2**63 - 1  # what the ledger's BigIntegerField holds
MAX_KEY_BYTES = 1024
MAX_FILENAME_CHARS = 255
MAX_CONTENT_TYPE_CHARS = 255

# Each pattern below is published as-is in the OpenAPI schema and is the check the code runs
# on the raw value (before stripping), so the schema and the code agree by construction.
CONTENT_TYPE_PATTERN = (
    r"^\s*[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    # Between parameters only spaces and tabs (HTTP's OWS): a line break would split the header.
    # A quoted value holds HTTP's qdtext only (tab, space, visible ASCII but quote and backslash):
    # no control character (a NUL cannot even be stored by PostgreSQL), no line break.
    r"([ \t]*;[ \t]*[A-Za-z0-9!#$&^_.+-]+=(\"[\t !#-\[\]-~]*\"|[A-Za-z0-9!#$&^_.+-]+))*\s*$"
)
RESOURCE_ID_PATTERN = r"^\s*[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\s*$"
SHA256_PATTERN = r"^(\s*[0-9A-Fa-f]{64}\s*)?$"
# Unicode categories Cc, Cf, Zl and Zp (controls, invisible format characters such as the
# right-to-left override, line and paragraph separators) as ranges, written out so that the
# schema carries them (tests check the list against unicodedata).
FORBIDDEN_NAME_RANGES = (
    (0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F),
    (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064),
    (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
_FORBIDDEN_IN_NAME = "".join(chr(lo) if lo == hi else f"{chr(lo)}-{chr(hi)}" for lo, hi in FORBIDDEN_NAME_RANGES)
# A plain name: no path separators or control characters, and at least one character that is
# neither a dot nor a space (so never "", ".", ".." or "...").
FILENAME_PATTERN = rf"^[^/\\{_FORBIDDEN_IN_NAME}]*[^/\\.\s{_FORBIDDEN_IN_NAME}][^/\\{_FORBIDDEN_IN_NAME}]*$"

_CONTENT_TYPE = re.compile(CONTENT_TYPE_PATTERN)
_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN)
_SHA256 = re.compile(SHA256_PATTERN)
_FILENAME = re.compile(FILENAME_PATTERN)
_NAME_FORBIDDEN_CHAR = re.compile(rf"[{_FORBIDDEN_IN_NAME}]")
# Characters kept as they are in the key; anything else becomes "_".
_UNSAFE_IN_KEY = re.compile(r"[^\w.()!'-]+", re.UNICODE)


class InvalidInput(ValueError):
    """A client value that cannot be accepted; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def clean_resource_id(value: str) -> str:
    """CKAN resource ids are UUIDs (8-4-4-4-12 hex digits); return the canonical lowercase form."""
    if not isinstance(value, str) or not _RESOURCE_ID.match(value):
        raise InvalidInput("resource_id", "must be a CKAN resource id (a UUID)")
    return str(uuid.UUID(value.strip()))


def clean_filename(value: str) -> str:
    """A plain file name: no path parts, no control characters, not only dots, at most 255 chars."""
    if len(value) > MAX_FILENAME_CHARS:
        raise InvalidInput("filename", f"must be at most {MAX_FILENAME_CHARS} characters")
    if not _FILENAME.match(value):
        if _NAME_FORBIDDEN_CHAR.search(value.strip()):
            raise InvalidInput("filename", "must not contain control characters")
        if "/" in value or "\\" in value or (value.strip() and not value.strip(" .")):
            raise InvalidInput("filename", "must be a file name, not a path")
        raise InvalidInput("filename", "must not be empty")
    name = unicodedata.normalize("NFC", value).strip()
    if len(name) > MAX_FILENAME_CHARS:
        raise InvalidInput("filename", f"must be at most {MAX_FILENAME_CHARS} characters")
    return name


def safe_key_name(filename: str) -> str:
    """The file name as it appears at the end of the object key."""
    safe = _UNSAFE_IN_KEY.sub("_", filename).lstrip(".")
    return safe or "file"


def clean_content_type(value: str) -> str:
    """A MIME type such as ``text/csv`` or ``text/csv; charset=utf-8``."""
    if len(value) > MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE.match(value):
        raise InvalidInput("content_type", "must be a MIME type such as text/csv")
    return value.strip()


def clean_size(value: int | None) -> int | None:
    """Declared size in bytes: above 0 (the upper limits depend on the kind of upload: plan_upload)."""
    if value is None:
        return None
    if value <= 0:
        raise InvalidInput("size", "must be greater than 0")
    if value > MAX_DECLARED_SIZE:
        raise InvalidInput("size", "is too large")
    return value


@dataclass(frozen=True)
class PartPlan:
    """How a multipart upload of ``size`` bytes is cut: equal parts, the last one possibly shorter."""

    size: int
    part_size: int
    part_count: int

    def part_length(self, part_number: int) -> int:
        """Bytes in part ``part_number`` (1-based)."""
        if not 1 <= part_number <= self.part_count:
            raise InvalidInput("part_numbers", f"must be between 1 and {self.part_count}")
        if part_number < self.part_count:
            return self.part_size
        return self.size - self.part_size * (self.part_count - 1)


def plan_upload(
    size: int | None, *, multipart: bool | None, threshold: int, preferred_part_size: int, max_size: int
) -> PartPlan | None:
    """The multipart plan for a declared size, or None for a single PUT; InvalidInput when impossible.

    Multipart when the client asks for it or the size is above ``threshold``. The part size is the
    preferred one, grown (in whole MiB) when the file would otherwise need more than 10,000 parts.
    """
    if size is not None and size > max_size:
        raise InvalidInput("size", f"must be at most {max_size} bytes (UPLOAD_MAX_SIZE)")
    if multipart is None:
        multipart = size is not None and size > threshold
    if not multipart:
        if size is not None and size > MAX_SINGLE_PUT_BYTES:
            raise InvalidInput(
                "size", f"must be at most {MAX_SINGLE_PUT_BYTES} bytes (5 GiB) for a single PUT: use a multipart upload"
            )
        return None
    if size is None:
        raise InvalidInput("size", "is required for a multipart upload")
    needed = math.ceil(size / MAX_PARTS)
    part_size = max(preferred_part_size, MIN_PART_BYTES, math.ceil(needed / _MIB) * _MIB)
    if part_size > MAX_PART_BYTES:
        raise InvalidInput("size", f"cannot be uploaded in {MAX_PARTS} parts of at most 5 GiB")
    part_size = min(part_size, size)
    return PartPlan(size=size, part_size=part_size, part_count=math.ceil(size / part_size))


def clean_sha256(value: str | None) -> str:
    """A hex SHA-256 digest, lowercased; empty when not given."""
    if not value:
        return ""
    if not _SHA256.match(value):
        raise InvalidInput("sha256", "must be 64 hexadecimal characters")
    return value.strip().lower()


def build_key(prefix: str, resource_id: str, upload_id: uuid.UUID, filename: str) -> str:
    """``{prefix}{resource_id}/{upload_id}/{safe filename}``, within S3's 1024-byte key limit."""
    key = f"{prefix}{resource_id}/{upload_id}/{safe_key_name(filename)}"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidInput("filename", "is too long: the object key would exceed 1024 bytes")
    return key


def parse_key(prefix: str, key: str) -> tuple[str, uuid.UUID] | None:
    """Return (resource_id, upload_id) for a key in this service's layout, else None."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) != 3:
        return None
    try:
        return str(uuid.UUID(parts[0])), uuid.UUID(parts[1])
    except ValueError:
        return None
