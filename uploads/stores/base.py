"""What every store is: its data classes, its errors, its capabilities and the methods services call.

A store is one module under ``uploads/stores/`` holding one class that satisfies ``Store``; the
facade ``uploads.storage`` dispatches to the one STORAGE_BACKEND selects. Callers that need an
optional feature ask ``capabilities``, never the store's type.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from django.conf import settings


class StorageError(Exception):
    """The bucket could not be reached or refused the request."""


class StorageNotConfigured(StorageError):
    """The store's bucket/container (or the credentials) are not configured."""


class MultipartUploadGone(StorageError):
    """The store no longer knows this multipart upload (completed, aborted or expired)."""


class Capability(enum.Flag):
    """What a store can do (file-keeper's style: callers test the flag, not the store)."""

    SIGNED_UPLOAD = enum.auto()  # a presigned single PUT
    MULTIPART = enum.auto()  # a large file in signed parts (S3 multipart, Azure blocks)
    MULTIPART_LISTING = enum.auto()  # unfinished multipart uploads can be listed (and aborted)
    LISTING = enum.auto()  # objects under a prefix, page by page
    HEAD = enum.auto()
    DELETE = enum.auto()
    OBJECT_ACLS = enum.auto()  # per-object public/private


@dataclass(frozen=True)
class PresignedPut:
    url: str
    headers: dict[str, str]
    expires_in: int


@dataclass(frozen=True)
class PartInfo:
    part_number: int
    size: int
    etag: str


@dataclass(frozen=True)
class MultipartInfo:
    """A multipart upload in progress, as the store lists it."""

    key: str
    upload_id: str
    initiated: datetime | None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime | None
    content_type: str = ""
    sha256: str = ""  # hex, when the object was stored with a SHA-256 checksum


def capped_ttl(seconds: int) -> int:
    """Keep a URL's lifetime within 1 s and 7 days: the SDKs would sign longer without complaint."""
    return max(1, min(int(seconds), settings.MAX_UPLOAD_URL_TTL))


def strip_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


class Store(Protocol):
    """One object store. Keys are the service's object keys; every method raises StorageError on failure."""

    name: str
    capabilities: Capability

    def is_configured(self) -> bool: ...

    def bucket_name(self) -> str:
        """The bucket (S3, R2) or container (Azure) events name, as the ledger records it."""
        ...

    def presign_put(
        self,
        key: str,
        *,
        content_type: str,
        content_length: int | None,
        sha256_hex: str,
        content_disposition: str,
        expires_in: int,
        acl: str,
    ) -> PresignedPut: ...

    def create_multipart_upload(self, key: str, *, content_type: str, content_disposition: str, acl: str) -> str: ...

    def presign_upload_part(
        self, key: str, *, upload_id: str, part_number: int, content_length: int, expires_in: int
    ) -> PresignedPut: ...

    def list_parts(self, key: str, *, upload_id: str) -> list[PartInfo]: ...

    def complete_multipart_upload(
        self, key: str, *, upload_id: str, parts: list[PartInfo], content_type: str, content_disposition: str
    ) -> None: ...

    def abort_multipart_upload(self, key: str, *, upload_id: str) -> bool: ...

    def iter_multipart_upload_pages(self, prefix: str) -> Iterator[list[MultipartInfo]]: ...

    def head_object(self, key: str) -> ObjectInfo | None: ...

    def iter_object_pages(self, prefix: str, *, page_size: int) -> Iterator[list[ObjectInfo]]: ...

    def delete_object(self, key: str) -> None: ...

    def object_is_public(self, key: str) -> bool | None: ...

    def set_object_public(self, key: str, *, public: bool) -> None: ...

    def public_url(self, key: str) -> str: ...
