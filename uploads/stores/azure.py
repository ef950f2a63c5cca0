"""Azure Blob Storage (and Azurite) through ``azure-storage-blob``: SAS URLs, blocks, HEAD, listing.

The S3 multipart flow maps onto block blobs: "creating" a multipart upload stages nothing (Azure
keeps a blob's uncommitted blocks by themselves), each part is a ``Put Block`` whose block id is
derived from its part number and signed with a SAS for that blob only, listing the parts is
``Get Block List`` (uncommitted), completing is ``Put Block List`` server side, and aborting has
nothing to delete: Azure discards uncommitted blocks a week after the last one was staged.

A shared-key SAS cannot bind request headers (only a user-delegation SAS can), so the content
type and length the client must send are returned as headers and checked against the blob's
properties before linking, as for every store (``uploads.services.link.describe_mismatch``).
"""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlparse

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import (
    BlobBlock,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    ExponentialRetry,
    generate_blob_sas,
)
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

BLOCK_ID_PREFIX = "part-"
BLOCK_ID_DIGITS = 6  # Azure wants every block id of a blob the same length; 50,000 blocks at most
# Clock skew between this host and Azure: a SAS starts this long before it is signed.
SAS_START_SKEW = timedelta(minutes=5)


def block_name(part_number: int) -> str:
    """The block id of part ``part_number`` before base64 (``part-000001``; the SDK encodes and decodes it)."""
    return f"{BLOCK_ID_PREFIX}{part_number:0{BLOCK_ID_DIGITS}d}"


def block_id(part_number: int) -> str:
    """The block id as Put Block takes it in its URL: base64 of ``block_name``, the same length for every part."""
    return base64.b64encode(block_name(part_number).encode("ascii")).decode("ascii")


def part_number_of(name: str) -> int | None:
    """The part number a (decoded) block id stands for, or None for a block this service did not name."""
    digits = name.removeprefix(BLOCK_ID_PREFIX)
    if digits == name or len(digits) != BLOCK_ID_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits)


def is_configured() -> bool:
    """True when a container and a credential (key or connection string) are set."""
    if not settings.AZURE_STORAGE_CONTAINER:
        return False
    if settings.AZURE_STORAGE_CONNECTION_STRING:
        return True
    return bool(settings.AZURE_STORAGE_ACCOUNT and settings.AZURE_STORAGE_KEY)


@functools.cache
def get_service() -> BlobServiceClient:
    """The process-wide Blob service client, from the connection string or account + key (+ endpoint)."""
    if not is_configured():
        raise StorageNotConfigured(
            "Azure Blob Storage is not configured (AZURE_STORAGE_CONTAINER and AZURE_STORAGE_ACCOUNT + "
            "AZURE_STORAGE_KEY, or AZURE_STORAGE_CONNECTION_STRING)"
        )
    options: dict[str, Any] = {
        "connection_timeout": 5,
        "read_timeout": 30,
        # The SDK's default waits 15 s, then 18 s, then 24 s between tries: a request here stays short.
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2, random_jitter_range=1),
    }
    if settings.AZURE_STORAGE_CONNECTION_STRING:
        return BlobServiceClient.from_connection_string(settings.AZURE_STORAGE_CONNECTION_STRING, **options)
    return BlobServiceClient(
        account_url=account_url(),
        credential={"account_name": settings.AZURE_STORAGE_ACCOUNT, "account_key": settings.AZURE_STORAGE_KEY},
        **options,
    )


def account_url() -> str:
    """The Blob endpoint: AZURE_STORAGE_ENDPOINT (Azurite: ``http://host:port/<account>``) or Azure's."""
    return settings.AZURE_STORAGE_ENDPOINT or f"https://{settings.AZURE_STORAGE_ACCOUNT}.blob.core.windows.net"


def get_container() -> ContainerClient:
    return get_service().get_container_client(settings.AZURE_STORAGE_CONTAINER)


@receiver(setting_changed)
def _forget_client_when_settings_change(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("AZURE_STORAGE_"):
        get_service.cache_clear()


def _reason(exc: AzureError) -> str:
    # The message of a transport error names the account URL: keep the class and Azure's code.
    code = getattr(exc, "error_code", None)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


class AzureBlobStore:
    """One Azure Blob container (AZURE_STORAGE_* settings)."""

    name = "azure"
    # No per-object ACLs: public access is a container setting. Unfinished block lists cannot be
    # listed apart from blobs, and Azure discards them itself, so there is nothing to abort.
    capabilities = (
        Capability.SIGNED_UPLOAD | Capability.MULTIPART | Capability.LISTING | Capability.HEAD | Capability.DELETE
    )

    def is_configured(self) -> bool:
        return is_configured()

    def bucket_name(self) -> str:
        return str(settings.AZURE_STORAGE_CONTAINER)

    def _sas_url(self, key: str, *, ttl: int, query: str = "") -> str:
        service = get_service()
        credential = service.credential
        if not getattr(credential, "account_key", None):
            raise StorageError(
                "signing a SAS URL needs the account key (AZURE_STORAGE_KEY, or AccountKey= in the connection string)"
            )
        now = datetime.now(UTC)
        try:
            sas = generate_blob_sas(
                account_name=credential.account_name,
                container_name=settings.AZURE_STORAGE_CONTAINER,
                blob_name=key,
                account_key=credential.account_key,
                # Create a new blob or write the one blob: no read, list, delete or other blob.
                permission=BlobSasPermissions(create=True, write=True),
                start=now - SAS_START_SKEW,
                expiry=now + timedelta(seconds=ttl),
                protocol="https" if urlparse(service.url).scheme == "https" else "https,http",
            )
        except (AzureError, ValueError, TypeError) as exc:
            raise StorageError(f"could not sign the upload URL: {type(exc).__name__}") from None
        blob_url = service.get_blob_client(settings.AZURE_STORAGE_CONTAINER, key).url
        return f"{blob_url}?{query}{'&' if query else ''}{sas}"

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
        """A SAS URL for one ``Put Blob`` of ``key`` (create/write on that blob only, until the expiry).

        Azure keeps no SHA-256 of a blob, so ``sha256_hex`` stays the client's word (in the
        ledger); ``acl`` has no Azure counterpart (the checks refuse STORAGE_OBJECT_ACLS here).
        """
        ttl = capped_ttl(expires_in)
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": content_type}
        if content_disposition:
            headers["x-ms-blob-content-disposition"] = content_disposition
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        return PresignedPut(url=self._sas_url(key, ttl=ttl), headers=headers, expires_in=ttl)

    def create_multipart_upload(
        self, key: str, *, content_type: str, content_disposition: str = "", acl: str = ""
    ) -> str:
        """Nothing to start in Azure (blocks are staged on the blob itself): a fresh id for the ledger."""
        return f"azure-blocks-{uuid.uuid4().hex}"

    def presign_upload_part(
        self, key: str, *, upload_id: str, part_number: int, content_length: int, expires_in: int
    ) -> PresignedPut:
        """A SAS URL for the ``Put Block`` of one part (its block id fixed in the URL)."""
        ttl = capped_ttl(expires_in)
        query = f"comp=block&blockid={quote(block_id(part_number), safe='')}"
        return PresignedPut(
            url=self._sas_url(key, ttl=ttl, query=query),
            headers={"Content-Length": str(content_length)},
            expires_in=ttl,
        )

    def list_parts(self, key: str, *, upload_id: str) -> list[PartInfo]:
        """The parts staged as uncommitted blocks, ascending; MultipartUploadGone once the list was committed."""
        blob = get_container().get_blob_client(key)
        try:
            committed, uncommitted = blob.get_block_list("all")
        except ResourceNotFoundError:
            return []  # nothing staged yet
        except AzureError as exc:
            raise StorageError(f"Get Block List {key!r} failed: {_reason(exc)}") from None
        if committed and not uncommitted:
            raise MultipartUploadGone(f"Get Block List {key!r}: the blocks were committed already")
        parts = []
        for block in uncommitted:
            number = part_number_of(str(block.id))
            if number is not None:
                # Put Block answers no ETag: the block id is what identifies a part.
                parts.append(PartInfo(part_number=number, size=int(block.size), etag=""))
        return sorted(parts, key=lambda p: p.part_number)

    def complete_multipart_upload(
        self, key: str, *, upload_id: str, parts: list[PartInfo], content_type: str = "", content_disposition: str = ""
    ) -> None:
        """``Put Block List``: commit the parts' blocks in order, with the blob's content settings."""
        blob = get_service().get_blob_client(settings.AZURE_STORAGE_CONTAINER, key)
        settings_ = ContentSettings(content_type=content_type or None, content_disposition=content_disposition or None)
        try:
            blob.commit_block_list(
                [BlobBlock(block_id=block_name(p.part_number)) for p in sorted(parts, key=lambda p: p.part_number)],
                content_settings=settings_,
                timeout=settings.STORAGE_COMPLETE_TIMEOUT_SECONDS,
            )
        except AzureError as exc:
            if getattr(exc, "error_code", None) == "InvalidBlockList":
                raise MultipartUploadGone(f"Put Block List {key!r}: the blocks are no longer staged") from None
            raise StorageError(f"Put Block List {key!r} failed: {_reason(exc)}") from None

    def abort_multipart_upload(self, key: str, *, upload_id: str) -> bool:
        """Nothing to delete: Azure discards uncommitted blocks itself (the ledger marks the upload aborted)."""
        return True

    def iter_multipart_upload_pages(self, prefix: str) -> Iterator[list[MultipartInfo]]:
        """No listing of unfinished block lists (see ``capabilities``): nothing to report or abort."""
        return iter(())

    def head_object(self, key: str) -> ObjectInfo | None:
        """``Get Blob Properties`` of ``key``, or None when there is no such (committed) blob."""
        try:
            props = get_container().get_blob_client(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StorageError(f"HEAD {key!r} failed: {_reason(exc)}") from None
        return ObjectInfo(
            key=key,
            size=int(props.size or 0),
            etag=strip_etag(props.etag),
            last_modified=props.last_modified,
            content_type=props.content_settings.content_type or "",
        )

    def iter_object_pages(self, prefix: str, *, page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
        """``List Blobs`` under ``prefix`` one page at a time (constant memory)."""
        try:
            pages = get_container().list_blobs(name_starts_with=prefix, results_per_page=page_size).by_page()
            for page in pages:
                yield [
                    ObjectInfo(
                        key=item.name,
                        size=int(item.size or 0),
                        etag=strip_etag(item.etag),
                        last_modified=item.last_modified,
                        content_type=item.content_settings.content_type or "",
                    )
                    for item in page
                ]
        except AzureError as exc:
            raise StorageError(f"listing {prefix!r} failed: {_reason(exc)}") from None

    def delete_object(self, key: str) -> None:
        """Delete one blob (used only by the explicit orphan clean-up); an absent blob is fine."""
        try:
            get_container().get_blob_client(key).delete_blob()
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise StorageError(f"DELETE {key!r} failed: {_reason(exc)}") from None

    def object_is_public(self, key: str) -> bool | None:
        raise StorageError("Azure Blob Storage has no per-object ACLs (public access is set on the container)")

    def set_object_public(self, key: str, *, public: bool) -> None:
        raise StorageError("Azure Blob Storage has no per-object ACLs (public access is set on the container)")

    def public_url(self, key: str) -> str:
        """The URL written into CKAN: STORAGE_PUBLIC_BASE_URL (a CDN) or the blob's own URL, + quoted key."""
        base = settings.STORAGE_PUBLIC_BASE_URL
        if not base:
            endpoint = (
                urlparse(get_service().url)._replace(query="").geturl().rstrip("/")
                if settings.AZURE_STORAGE_CONNECTION_STRING
                else account_url().rstrip("/")
            )
            base = f"{endpoint}/{settings.AZURE_STORAGE_CONTAINER}"
        return f"{base}/{quote(key, safe='/')}"
