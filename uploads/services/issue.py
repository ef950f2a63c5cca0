"""Issue presigned upload URLs and record each one in the ledger."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from uploads import ckan, content_policy, storage
from uploads.models import Upload
from uploads.validation import build_key

log = logging.getLogger(__name__)

_IDENTITY_TTL_SECONDS = 300
_identity_cache: dict[str, tuple[float, str, str]] = {}
_identity_lock = threading.Lock()


@dataclass(frozen=True)
class IssuedUpload:
    upload: Upload
    url: str
    headers: dict[str, str]


def _token_fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def identify_requester(token: str) -> tuple[str, str]:
    """(user name, user id) of a client token, cached briefly so harvesters pay one call."""
    fingerprint = _token_fingerprint(token)
    now = time.monotonic()
    with _identity_lock:
        cached = _identity_cache.get(fingerprint)
    if cached and cached[0] > now:
        return cached[1], cached[2]
    try:
        user = ckan.whoami(token=token)
        name, user_id = str(user.get("name", "")), str(user.get("id", ""))
    except ckan.CkanError as exc:
        # The token was just accepted for the update, so this is CKAN hiccuping: record the
        # upload with a token fingerprint rather than refuse it.
        log.warning("could not identify the requester: %s", exc.message)
        return f"token:{fingerprint[:12]}", ""
    with _identity_lock:
        if len(_identity_cache) > 10_000:
            _identity_cache.clear()
        _identity_cache[fingerprint] = (now + _IDENTITY_TTL_SECONDS, name, user_id)
    return name, user_id


def issue_upload(
    *,
    resource_id: str,
    filename: str,
    content_type: str,
    size: int | None,
    sha256: str,
    client_token: str,
    client_address: str | None,
    resource: dict[str, Any] | None = None,
) -> IssuedUpload:
    """Check the client may update the resource, record an Upload and sign its PUT URL.

    ``resource`` is given when the caller has just created the resource with the same token,
    which already proves the right to update it.
    """
    policy = content_policy.decide(content_type, filename)
    if resource is None:
        resource = ckan.authorize_resource_update(resource_id, token=client_token)
    requested_by, requested_by_id = identify_requester(client_token)
    upload_id = uuid.uuid4()
    key = build_key(settings.STORAGE_KEY_PREFIX, resource_id, upload_id, filename)
    ttl = storage.capped_ttl(settings.UPLOAD_URL_TTL)
    signed = storage.presign_put(
        key,
        content_type=content_type,
        content_length=size,
        sha256_hex=sha256,
        content_disposition=policy.content_disposition,
        expires_in=ttl,
    )
    now = timezone.now()
    with transaction.atomic():
        upload = Upload.objects.create(
            id=upload_id,
            resource_id=resource_id,
            package_id=str(resource.get("package_id", "")),
            filename=filename,
            content_type=content_type,
            declared_size=size,
            declared_sha256=sha256,
            bucket=settings.STORAGE_BUCKET,
            key=key,
            requested_by=requested_by,
            requested_by_id=requested_by_id,
            client_address=client_address,
            issued_at=now,
            expires_at=now + timedelta(seconds=signed.expires_in),
        )
    log.info("issued upload %s for resource %s to %s", upload.id, resource_id, requested_by)
    return IssuedUpload(upload=upload, url=signed.url, headers=signed.headers)


def create_resource_and_issue(
    *,
    fields: dict[str, Any],
    filename: str,
    content_type: str,
    size: int | None,
    sha256: str,
    client_token: str,
    client_address: str | None,
) -> tuple[dict[str, Any], IssuedUpload]:
    """Create a CKAN resource with the client's token, then issue an upload URL for it."""
    # Refuse a file the policy refuses before CKAN gets a resource that would never have one.
    content_policy.decide(content_type, filename)
    resource = ckan.resource_create(fields, token=client_token)
    issued = issue_upload(
        resource_id=str(resource["id"]),
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=sha256,
        client_token=client_token,
        client_address=client_address,
        resource=resource,
    )
    return resource, issued
