"""Cloudflare R2 and AWS S3 (and moto): the only module that imports boto3 for the bucket.

One client per process, built lazily from settings and reused: building a client costs far
more than signing a URL. The client is R2-safe: region ``auto`` by default, SigV4, and
checksums only when an operation requires them (boto3 >= 1.36 adds default checksums that R2
has rejected).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

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
    strip_etag,
)


def is_configured() -> bool:
    """True when a bucket and credentials are set."""
    return bool(settings.STORAGE_BUCKET and settings.STORAGE_ACCESS_KEY_ID and settings.STORAGE_SECRET_ACCESS_KEY)


@functools.cache
def get_client(*, read_timeout: int = 30) -> Any:
    """The process-wide S3 client (one more, with a long read timeout, for slow operations)."""
    if not is_configured():
        raise StorageNotConfigured("object storage is not configured (STORAGE_BUCKET and credentials)")
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=16,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.STORAGE_ENDPOINT_URL or None,
        region_name=settings.STORAGE_REGION,
        aws_access_key_id=settings.STORAGE_ACCESS_KEY_ID,
        aws_secret_access_key=settings.STORAGE_SECRET_ACCESS_KEY,
        config=config,
    )


@receiver(setting_changed)
def _forget_client_when_settings_change(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("STORAGE_"):
        get_client.cache_clear()


def hex_sha256_to_base64(hex_digest: str) -> str:
    """S3 wants checksums base64-encoded; clients declare them as hex."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _multipart_failure(action: str, key: str, exc: BotoCoreError | ClientError) -> StorageError:
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in {"NoSuchUpload", "404"}:
            return MultipartUploadGone(f"{action} {key!r}: the multipart upload no longer exists")
        return StorageError(f"{action} {key!r} failed: {code or type(exc).__name__}")
    return StorageError(f"{action} {key!r} failed: {type(exc).__name__}")


_ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


class S3Store:
    """R2 or S3 through boto3 (STORAGE_* settings)."""

    name = "s3"
    capabilities = (
        Capability.SIGNED_UPLOAD
        | Capability.MULTIPART
        | Capability.MULTIPART_LISTING
        | Capability.LISTING
        | Capability.HEAD
        | Capability.DELETE
        | Capability.OBJECT_ACLS
    )

    def is_configured(self) -> bool:
        return is_configured()

    def bucket_name(self) -> str:
        return str(settings.STORAGE_BUCKET)

    def presign_put(
        self,
        key: str,
        *,
        content_type: str,
        content_length: int | None,
        sha256_hex: str = "",
        content_disposition: str = "",
        expires_in: int,
        acl: str = "",
    ) -> PresignedPut:
        """Sign a single PUT of ``key``; the returned headers are bound into the signature.

        ``acl`` is a canned ACL (``public-read``) for stores with object ACLs; R2 has none.
        """
        params: dict[str, Any] = {"Bucket": settings.STORAGE_BUCKET, "Key": key, "ContentType": content_type}
        headers = {"Content-Type": content_type}
        if content_disposition:
            # Stored with the object and sent back on every GET: the bucket never renders it.
            params["ContentDisposition"] = content_disposition
            headers["Content-Disposition"] = content_disposition
        if content_length is not None:
            params["ContentLength"] = content_length
            headers["Content-Length"] = str(content_length)
        if sha256_hex:
            checksum = hex_sha256_to_base64(sha256_hex)
            params["ChecksumSHA256"] = checksum
            headers["x-amz-checksum-sha256"] = checksum
        if acl:
            params["ACL"] = acl
            headers["x-amz-acl"] = acl
        ttl = capped_ttl(expires_in)
        try:
            url = get_client().generate_presigned_url("put_object", Params=params, ExpiresIn=ttl, HttpMethod="PUT")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not sign the upload URL: {type(exc).__name__}") from None
        return PresignedPut(url=url, headers=headers, expires_in=ttl)

    def create_multipart_upload(
        self, key: str, *, content_type: str, content_disposition: str = "", acl: str = ""
    ) -> str:
        """Start a multipart upload of ``key``; returns its upload id.

        The object gets ``content_disposition`` (``attachment`` for an allowed active type) and
        ``acl`` (a canned ACL, on stores that have them) when it is assembled.
        """
        params: dict[str, Any] = {"Bucket": settings.STORAGE_BUCKET, "Key": key, "ContentType": content_type}
        if content_disposition:
            params["ContentDisposition"] = content_disposition
        if acl:
            params["ACL"] = acl
        try:
            answer = get_client().create_multipart_upload(**params)
        except (BotoCoreError, ClientError) as exc:
            raise _multipart_failure("CreateMultipartUpload", key, exc) from None
        return str(answer["UploadId"])

    def presign_upload_part(
        self, key: str, *, upload_id: str, part_number: int, content_length: int, expires_in: int
    ) -> PresignedPut:
        """Sign the PUT of one part; bound to its part number and its exact length."""
        params = {
            "Bucket": settings.STORAGE_BUCKET,
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "ContentLength": content_length,
        }
        ttl = capped_ttl(expires_in)
        try:
            url = get_client().generate_presigned_url("upload_part", Params=params, ExpiresIn=ttl, HttpMethod="PUT")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not sign a part URL: {type(exc).__name__}") from None
        return PresignedPut(url=url, headers={"Content-Length": str(content_length)}, expires_in=ttl)

    def list_parts(self, key: str, *, upload_id: str) -> list[PartInfo]:
        """Every part the store holds for a multipart upload, ascending (at most 10,000)."""
        parts: list[PartInfo] = []
        paginator = get_client().get_paginator("list_parts")
        try:
            for page in paginator.paginate(Bucket=settings.STORAGE_BUCKET, Key=key, UploadId=upload_id):
                parts.extend(
                    PartInfo(
                        part_number=int(p["PartNumber"]), size=int(p.get("Size", 0)), etag=strip_etag(p.get("ETag"))
                    )
                    for p in page.get("Parts", [])
                )
        except (BotoCoreError, ClientError) as exc:
            raise _multipart_failure("ListParts", key, exc) from None
        return sorted(parts, key=lambda p: p.part_number)

    def complete_multipart_upload(
        self, key: str, *, upload_id: str, parts: list[PartInfo], content_type: str = "", content_disposition: str = ""
    ) -> None:
        """Assemble the object from its parts (ascending, with the store's own ETags).

        The content type and disposition were fixed when the upload was created.
        """
        try:
            # The store assembles the object before it answers; S3 documents that it can take minutes.
            get_client(read_timeout=settings.STORAGE_COMPLETE_TIMEOUT_SECONDS).complete_multipart_upload(
                Bucket=settings.STORAGE_BUCKET,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.part_number, "ETag": f'"{p.etag}"'} for p in parts]},
            )
        except (BotoCoreError, ClientError) as exc:
            raise _multipart_failure("CompleteMultipartUpload", key, exc) from None

    def abort_multipart_upload(self, key: str, *, upload_id: str) -> bool:
        """Abort a multipart upload and free its parts; False when the store no longer knew it."""
        try:
            get_client().abort_multipart_upload(Bucket=settings.STORAGE_BUCKET, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:
            failure = _multipart_failure("AbortMultipartUpload", key, exc)
            if isinstance(failure, MultipartUploadGone):
                return False
            raise failure from None
        return True

    def iter_multipart_upload_pages(self, prefix: str) -> Iterator[list[MultipartInfo]]:
        """Yield the multipart uploads in progress under ``prefix``, one listing page at a time."""
        paginator = get_client().get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=settings.STORAGE_BUCKET, Prefix=prefix):
                yield [
                    MultipartInfo(key=item["Key"], upload_id=item["UploadId"], initiated=item.get("Initiated"))
                    for item in page.get("Uploads", [])
                ]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"listing multipart uploads under {prefix!r} failed: {type(exc).__name__}") from None

    def head_object(self, key: str) -> ObjectInfo | None:
        """What the bucket holds at ``key``, or None when there is no such object."""
        try:
            response = get_client().head_object(Bucket=settings.STORAGE_BUCKET, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(f"HEAD {key!r} failed: {code or type(exc).__name__}") from None
        except BotoCoreError as exc:
            raise StorageError(f"HEAD {key!r} failed: {type(exc).__name__}") from None
        checksum = response.get("ChecksumSHA256") or ""
        sha256 = ""
        if checksum:
            try:
                sha256 = base64.b64decode(checksum).hex()
            except ValueError:
                sha256 = ""
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=strip_etag(response.get("ETag")),
            last_modified=response.get("LastModified"),
            content_type=response.get("ContentType", "") or "",
            sha256=sha256,
        )

    def iter_object_pages(self, prefix: str, *, page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
        """Yield the objects under ``prefix`` one listing page at a time (constant memory)."""
        paginator = get_client().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(
                Bucket=settings.STORAGE_BUCKET, Prefix=prefix, PaginationConfig={"PageSize": page_size}
            ):
                yield [
                    ObjectInfo(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        etag=strip_etag(item.get("ETag")),
                        last_modified=item.get("LastModified"),
                    )
                    for item in page.get("Contents", [])
                ]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"listing {prefix!r} failed: {type(exc).__name__}") from None

    def delete_object(self, key: str) -> None:
        """Delete one object (used only by the explicit orphan clean-up)."""
        try:
            get_client().delete_object(Bucket=settings.STORAGE_BUCKET, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"DELETE {key!r} failed: {type(exc).__name__}") from None

    def object_is_public(self, key: str) -> bool | None:
        """Whether the object's ACL lets anyone read it; None when there is no such object."""
        try:
            response = get_client().get_object_acl(Bucket=settings.STORAGE_BUCKET, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(f"GET ACL of {key!r} failed: {code or type(exc).__name__}") from None
        except BotoCoreError as exc:
            raise StorageError(f"GET ACL of {key!r} failed: {type(exc).__name__}") from None
        return any(
            grant.get("Grantee", {}).get("URI") == _ALL_USERS and grant.get("Permission") in {"READ", "FULL_CONTROL"}
            for grant in response.get("Grants", [])
        )

    def set_object_public(self, key: str, *, public: bool) -> None:
        """Give one object the canned ACL ``public-read`` or ``private`` (S3 with object ACLs only)."""
        try:
            get_client().put_object_acl(
                Bucket=settings.STORAGE_BUCKET, Key=key, ACL="public-read" if public else "private"
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"PUT ACL of {key!r} failed: {type(exc).__name__}") from None

    def public_url(self, key: str) -> str:
        """The URL written into CKAN for an object: the public base (or endpoint/bucket) + quoted key."""
        base = settings.STORAGE_PUBLIC_BASE_URL
        if not base:
            endpoint = settings.STORAGE_ENDPOINT_URL or f"https://s3.{settings.STORAGE_REGION}.amazonaws.com"
            base = f"{endpoint}/{settings.STORAGE_BUCKET}"
        return f"{base}/{quote(key, safe='/')}"
