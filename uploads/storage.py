"""The object store as services see it: sign, head, list, delete, multipart, in one set of functions.

Each call goes to the store STORAGE_BACKEND selects (``uploads.stores``: one module per store,
each declaring its ``Capability`` flags); the data classes and errors are the stores' own. No
module above this one imports a cloud SDK or asks which cloud it runs on.
"""

from __future__ import annotations

from collections.abc import Iterator

from uploads.stores import active_store
from uploads.stores.base import (
    Capability,
    MultipartInfo,
    MultipartUploadGone,
    ObjectInfo,
    PartInfo,
    PresignedPut,
    StorageError,
    StorageNotConfigured,
    capped_ttl,
)

__all__ = [
    "Capability",
    "MultipartInfo",
    "MultipartUploadGone",
    "ObjectInfo",
    "PartInfo",
    "PresignedPut",
    "StorageError",
    "StorageNotConfigured",
    "abort_multipart_upload",
    "bucket_name",
    "can",
    "capped_ttl",
    "complete_multipart_upload",
    "create_multipart_upload",
    "delete_object",
    "head_object",
    "is_configured",
    "iter_multipart_upload_pages",
    "iter_object_pages",
    "list_parts",
    "normal_etag",
    "object_is_public",
    "presign_put",
    "presign_upload_part",
    "public_url",
    "set_object_public",
]


def normal_etag(etag: str | None) -> str:
    """An ETag as comparable text: no quotes or spaces, lowercase (stores and clients differ)."""
    return (etag or "").strip().strip('"').lower()


def is_configured() -> bool:
    """True when the selected store has its bucket/container and credentials."""
    return active_store().is_configured()


def can(capability: Capability) -> bool:
    """Whether the selected store has ``capability`` (ask this, never which store it is)."""
    return bool(active_store().capabilities & capability)


def bucket_name() -> str:
    """The bucket or container that uploads go to and events name."""
    return active_store().bucket_name()


def presign_put(
    key: str,
    *,
    content_type: str,
    content_length: int | None,
    sha256_hex: str = "",
    content_disposition: str = "",
    expires_in: int,
    acl: str = "",
) -> PresignedPut:
    """Sign a single PUT of ``key``; the returned headers are the ones the client must send."""
    return active_store().presign_put(
        key,
        content_type=content_type,
        content_length=content_length,
        sha256_hex=sha256_hex,
        content_disposition=content_disposition,
        expires_in=expires_in,
        acl=acl,
    )


def create_multipart_upload(key: str, *, content_type: str, content_disposition: str = "", acl: str = "") -> str:
    """Start a multipart (S3) or block (Azure) upload of ``key``; returns its upload id."""
    return active_store().create_multipart_upload(
        key, content_type=content_type, content_disposition=content_disposition, acl=acl
    )


def presign_upload_part(
    key: str, *, upload_id: str, part_number: int, content_length: int, expires_in: int
) -> PresignedPut:
    """Sign the PUT of one part; bound to its part number and its exact length."""
    return active_store().presign_upload_part(
        key, upload_id=upload_id, part_number=part_number, content_length=content_length, expires_in=expires_in
    )


def list_parts(key: str, *, upload_id: str) -> list[PartInfo]:
    """Every part the store holds for a multipart upload, ascending."""
    return active_store().list_parts(key, upload_id=upload_id)


def complete_multipart_upload(
    key: str, *, upload_id: str, parts: list[PartInfo], content_type: str = "", content_disposition: str = ""
) -> None:
    """Assemble the object from its parts (ascending); a store that sets content settings now uses these."""
    active_store().complete_multipart_upload(
        key, upload_id=upload_id, parts=parts, content_type=content_type, content_disposition=content_disposition
    )


def abort_multipart_upload(key: str, *, upload_id: str) -> bool:
    """Abort a multipart upload and free its parts; False when the store no longer knew it."""
    return active_store().abort_multipart_upload(key, upload_id=upload_id)


def iter_multipart_upload_pages(prefix: str) -> Iterator[list[MultipartInfo]]:
    """Yield the multipart uploads in progress under ``prefix``, one listing page at a time."""
    return active_store().iter_multipart_upload_pages(prefix)


def head_object(key: str) -> ObjectInfo | None:
    """What the store holds at ``key``, or None when there is no such object."""
    return active_store().head_object(key)


def iter_object_pages(prefix: str, *, page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
    """Yield the objects under ``prefix`` one listing page at a time (constant memory)."""
    return active_store().iter_object_pages(prefix, page_size=page_size)


def delete_object(key: str) -> None:
    """Delete one object (used only by the explicit orphan clean-up)."""
    active_store().delete_object(key)


def object_is_public(key: str) -> bool | None:
    """Whether the object's ACL lets anyone read it; None when there is no such object."""
    return active_store().object_is_public(key)


def set_object_public(key: str, *, public: bool) -> None:
    """Make one object public or private (stores with Capability.OBJECT_ACLS only)."""
    active_store().set_object_public(key, public=public)


def public_url(key: str) -> str:
    """The URL written into CKAN for an object."""
    return active_store().public_url(key)
