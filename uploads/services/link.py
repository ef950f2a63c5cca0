"""Link an uploaded object to its CKAN resource: claim, confirm with HEAD, patch, record.

Concurrency, in three layers:
- The claim is a conditional UPDATE (state and ``claim_token IS NULL`` in the WHERE clause), so
  of two workers handed the same upload exactly one gets rowcount 1; the other returns ``noop``.
- Last writer wins per resource. CKAN has no conditional update, so a stale patch that lands
  after a fresh one cannot be undone by a later check alone (that check cannot tell in which
  order two in-flight patches reached CKAN). So the decision "is a newer object already
  linked?", the CKAN patch and the bookkeeping happen in ONE transaction that first locks every
  upload row of the resource (``SELECT ... FOR UPDATE``, in primary-key order so two workers
  cannot deadlock). In PostgreSQL that serialises only links of the same resource; in SQLite the
  transaction is ``BEGIN IMMEDIATE`` (settings), which serialises all writers for the length of
  one ``resource_patch`` (tens of ms; at most CKAN_TIMEOUT_SECONDS). The HEAD request happens
  before the lock, so the only network call under it is the patch.
- The sweep releases claims held longer than LINK_CLAIM_TIMEOUT_SECONDS (a killed worker). A
  worker re-checks, under the lock, that it still owns its claim before patching, and the
  sweep's UPDATE of a locked row waits for that transaction, so a released claim is never
  patched by two workers at once.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from uploads import ckan, content_policy, layout, storage
from uploads.models import LinkAttempt, LinkOutcome, LinkTrigger, Upload, UploadState
from uploads.services import targets

log = logging.getLogger(__name__)

OBJECT_NOT_FOUND = "object not found in bucket"
# Hints that an object exists wait for a pending backoff (a duplicate event while CKAN is down
# must not cut it short); retries from the sweep, replays and reconciliation act at once.
_HINT_TRIGGERS = {LinkTrigger.EVENT, LinkTrigger.COMPLETE}
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Transient(Exception):
    """Worth another try later (CKAN or the bucket unavailable, object not visible yet)."""

    def __init__(self, message: str, *, ckan_status: int | None = None, final_message: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.ckan_status = ckan_status
        # What to record instead of ``message`` once the attempts are spent.
        self.final_message = final_message or message


class _Permanent(Exception):
    """Another try cannot help (mismatch, 403, 404, 409)."""

    def __init__(self, message: str, *, ckan_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ckan_status = ckan_status


@dataclass(frozen=True)
class _Claim:
    token: UUID
    attempts: int


def retry_delay(attempts: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed try: exponential, capped, with jitter.

    "Equal jitter": half the capped delay is fixed and half random, so retries of many uploads
    that failed together spread out, yet none comes back sooner than half the nominal delay.
    """
    base = settings.LINK_RETRY_BASE_SECONDS
    cap = settings.LINK_RETRY_MAX_SECONDS
    exponent = max(0, attempts - 1)
    nominal = float(cap) if exponent >= 63 else min(float(cap), float(base) * 2**exponent)
    return nominal / 2 + (rng or random).uniform(0, nominal / 2)


def link_upload(*, upload_id: UUID, trigger: str, triggered_by: str = "", force: bool = False) -> str:
    """Try once to write an upload's object into its CKAN resource; return the LinkOutcome value."""
    now = timezone.now()
    claim = _claim(upload_id, trigger=trigger, force=force, now=now)
    if claim is None:
        return LinkOutcome.NOOP.value
    attempt = LinkAttempt(
        upload_id=upload_id, started_at=now, trigger=trigger, triggered_by=triggered_by, outcome=LinkOutcome.NOOP
    )
    try:
        upload = Upload.objects.get(pk=upload_id)
        info = _confirm_object(upload)
        file_id = _register_file(upload)
        outcome = _decide_and_patch(upload_id, claim=claim, info=info, force=force, attempt=attempt, file_id=file_id)
    except _Transient as exc:
        outcome = _record_transient(upload_id, claim=claim, error=exc, attempt=attempt)
    except _Permanent as exc:
        outcome = _record_failure(
            upload_id, claim=claim, message=exc.message, ckan_status=exc.ckan_status, attempt=attempt
        )
    log.info("link %s (%s): %s", upload_id, trigger, outcome)
    return outcome


def _claim(upload_id: UUID, *, trigger: str, force: bool, now: datetime) -> _Claim | None:
    """Take the row with a conditional UPDATE; None when there is nothing to do or someone else has it."""
    states = [UploadState.UPLOADED, UploadState.LINKED] if force else [UploadState.UPLOADED]
    rows = Upload.objects.filter(pk=upload_id, state__in=states, claim_token__isnull=True)
    if not force and trigger in _HINT_TRIGGERS:
        rows = rows.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    token = uuid.uuid4()
    with transaction.atomic():
        if not rows.update(claim_token=token, claimed_at=now, attempts=F("attempts") + 1):
            return None
        attempts = Upload.objects.values_list("attempts", flat=True).get(pk=upload_id)
    return _Claim(token=token, attempts=attempts)


def _confirm_object(upload: Upload) -> storage.ObjectInfo:
    """HEAD the object and check it is what the client declared; store what it turned out to be."""
    try:
        info = storage.head_object(upload.key)
    except storage.StorageError as exc:
        raise _Transient(str(exc)) from None
    if info is None:
        # An event can beat the bucket's read-after-write in a replica: not fatal at first.
        raise _Transient(f"{OBJECT_NOT_FOUND} (not yet visible?)", final_message=OBJECT_NOT_FOUND)
    Upload.objects.filter(pk=upload.pk).update(
        object_size=info.size,
        object_etag=info.etag,
        object_content_type=info.content_type,
        object_last_modified=info.last_modified,
        # Only a checksum the store itself verified counts as verified; the declared one is the client's word.
        verified_sha256=info.sha256.lower(),
    )
    mismatch = describe_mismatch(upload, info)
    if mismatch:
        raise _Permanent(mismatch)
    return info


def _register_file(upload: Upload) -> str:
    """ckan_files style: the id of the object's file in CKAN's registry, registered and owned by the resource.

    Before the per-resource lock (these are network calls) and safe to repeat: a file already
    registered at the location is found again, and the transfer is skipped once the resource
    owns it. CKAN analyses the object itself (size, MD5, content type) when registering it.
    """
    if not layout.is_ckan_files() or upload.target_kind in targets.IMAGE_KINDS:
        return ""  # an image is shown by browsers from its public URL, not served by CKAN
    location = layout.storage_location(upload.key)
    name = settings.CKAN_FILES_STORAGE
    token = ckan.service_token()
    try:
        try:
            registered = ckan.file_register(location, name, token=token)
        except ckan.CkanValidationError as exc:
            if "already registered" not in exc.message + str(exc.details):
                raise
            # A retry: registered before, by this service (owned by its user) or moved to the resource.
            found = ckan.file_by_location(
                location, name, owner_type="resource", owner_id=upload.resource_id, token=token
            ) or ckan.file_by_location(location, name, owner_type="user", owner_id="", token=token)
            if found is None:
                raise
            registered = found
        file_id = str(registered["id"])
        if (registered.get("owner_type"), registered.get("owner_id")) != ("resource", upload.resource_id):
            ckan.file_ownership_transfer(file_id, owner_type="resource", owner_id=upload.resource_id, token=token)
    except ckan.CkanUnavailable as exc:
        raise _Transient(exc.message, ckan_status=exc.status or None) from None
    except ckan.CkanError as exc:
        raise _Permanent(
            f"CKAN refused to register the file in storage {name!r}: {exc.message}", ckan_status=exc.status or None
        ) from None
    return file_id


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def describe_mismatch(upload: Upload, info: storage.ObjectInfo) -> str:
    """Why the object is not what the client declared, or "" when it is."""
    if upload.declared_size is not None and info.size != upload.declared_size:
        return f"size mismatch: declared {upload.declared_size} bytes, object has {info.size}"
    declared_type = _media_type(upload.content_type)
    if info.content_type and declared_type and _media_type(info.content_type) != declared_type:
        return f"content type mismatch: declared {upload.content_type!r}, object has {info.content_type!r}"
    if upload.declared_sha256 and info.sha256 and info.sha256.lower() != upload.declared_sha256.lower():
        return f"sha256 mismatch: declared {upload.declared_sha256.lower()}, object has {info.sha256.lower()}"
    return ""


def resource_format(content_type: str, filename: str) -> str:
    """CKAN's format field: the file extension (the linked URL ends in it), else a known name for the type."""
    # Never the raw MIME, and no machine-dependent MIME tables (application/xml → ".xsl").
    return content_policy.ckan_format(content_type, filename)


def object_hash(upload: Upload, info: storage.ObjectInfo) -> str:
    """The hash to record in CKAN: a SHA-256 the store verified, else a single-part MD5 ETag, else nothing.

    A SHA-256 only declared by the client (a multipart upload, which S3 and R2 cannot check as a
    whole) is kept in the ledger as declared, never written into CKAN as if it were checked.
    """
    if info.sha256:
        return f"sha256:{info.sha256.lower()}"
    # A multipart ETag ("<hex>-<parts>") is not the file's MD5: then record nothing.
    if _MD5_HEX.match(info.etag.lower()):
        return f"md5:{info.etag.lower()}"
    return ""


def ckan_fields(upload: Upload, info: storage.ObjectInfo, *, file_id: str = "") -> dict[str, Any]:
    """What ``resource_patch`` receives.

    The public style never sends ``url_type`` (CKAN would show its download route instead of the
    URL); the s3filestore style sends ``url_type: upload`` and the file name, as the extension does.
    """
    content_type = info.content_type or upload.content_type
    fields: dict[str, Any] = {
        **layout.link_fields(upload.key, file_id=file_id),
        "size": info.size,
        "mimetype": content_type,
    }
    fmt = resource_format(content_type, upload.filename)
    if fmt:
        fields["format"] = fmt
    if info.last_modified is not None:
        # CKAN refuses a UTC offset in the string ("Date format incorrect"); it stores UTC.
        fields["last_modified"] = info.last_modified.astimezone(UTC).replace(tzinfo=None).isoformat()
    digest = object_hash(upload, info)
    if digest:
        fields["hash"] = digest
    return fields


def _order_key(upload: Upload) -> tuple[datetime, datetime, str]:
    """Which object is newer: the bucket's Last-Modified, then when the URL was issued."""
    return (upload.object_last_modified or _EPOCH, upload.issued_at, str(upload.pk))


def _decide_and_patch(
    upload_id: UUID, *, claim: _Claim, info: storage.ObjectInfo, force: bool, attempt: LinkAttempt, file_id: str = ""
) -> str:
    with transaction.atomic():
        # Siblings share the target (kind + id): a resource, an organization's or a group's image.
        siblings = list(Upload.objects.select_for_update().filter(targets.target_of(upload_id)).order_by("pk"))
        upload = next(s for s in siblings if s.pk == upload_id)
        if upload.claim_token != claim.token:
            # The sweep took the claim back (we were too slow) and another worker may own it now.
            return LinkOutcome.NOOP.value
        now = timezone.now()
        newer = [
            s
            for s in siblings
            if s.pk != upload.pk and s.state == UploadState.LINKED and _order_key(s) > _order_key(upload)
        ]
        if newer:
            Upload.objects.filter(pk=upload.pk).update(
                state=UploadState.SUPERSEDED, claim_token=None, claimed_at=None, next_attempt_at=None, last_error=""
            )
            _finish(attempt, LinkOutcome.SUPERSEDED, error=f"a newer upload is linked: {newer[0].pk}")
            return LinkOutcome.SUPERSEDED.value
        try:
            targets.patch(upload, info, file_id=file_id)
        except ckan.CkanUnavailable as exc:
            raise _Transient(exc.message, ckan_status=exc.status or None) from None
        except ckan.CkanError as exc:
            raise _Permanent(f"CKAN refused the link: {exc.message}", ckan_status=exc.status or None) from None
        older_linked = [s.pk for s in siblings if s.pk != upload.pk and s.state == UploadState.LINKED]
        if older_linked:
            Upload.objects.filter(pk__in=older_linked).update(state=UploadState.SUPERSEDED)
        Upload.objects.filter(pk=upload.pk).update(
            state=UploadState.LINKED,
            linked_at=now,
            linked_url=storage.public_url(upload.key)
            if upload.target_kind in targets.IMAGE_KINDS
            else layout.linked_url(
                upload.key, package_id=upload.package_id, resource_id=upload.resource_id, file_id=file_id
            ),
            last_error="",
            next_attempt_at=None,
            claim_token=None,
            claimed_at=None,
        )
        _finish(attempt, LinkOutcome.LINKED, ckan_status=200)
    return LinkOutcome.LINKED.value


def _finish(attempt: LinkAttempt, outcome: str, *, ckan_status: int | None = None, error: str = "") -> None:
    attempt.outcome = outcome
    attempt.ckan_status = ckan_status
    attempt.error = error
    attempt.finished_at = timezone.now()
    attempt.save()


@transaction.atomic
def _record_transient(upload_id: UUID, *, claim: _Claim, error: _Transient, attempt: LinkAttempt) -> str:
    if claim.attempts >= settings.LINK_MAX_ATTEMPTS:
        message = f"{error.final_message} (gave up after {claim.attempts} attempts)"
        return _record_failure(upload_id, claim=claim, message=message, ckan_status=error.ckan_status, attempt=attempt)
    now = timezone.now()
    due = now + timedelta(seconds=retry_delay(claim.attempts))
    updated = Upload.objects.filter(pk=upload_id, claim_token=claim.token).update(
        next_attempt_at=due, last_error=error.message, claim_token=None, claimed_at=None
    )
    if not updated:
        return LinkOutcome.NOOP.value
    _finish(attempt, LinkOutcome.RETRY, ckan_status=error.ckan_status, error=error.message)
    return LinkOutcome.RETRY.value


@transaction.atomic
def _record_failure(
    upload_id: UUID, *, claim: _Claim, message: str, ckan_status: int | None, attempt: LinkAttempt
) -> str:
    # A forced re-patch of a linked upload that fails leaves the link as it was: CKAN still
    # points at this object; only the attempt records what went wrong.
    current = Upload.objects.filter(pk=upload_id, claim_token=claim.token)
    if not current.exists():
        return LinkOutcome.NOOP.value
    if current.filter(state=UploadState.LINKED).exists():
        current.update(claim_token=None, claimed_at=None, last_error=message)
    else:
        current.update(
            state=UploadState.FAILED,
            last_error=message,
            next_attempt_at=None,
            claim_token=None,
            claimed_at=None,
            failure_notified_at=None,  # news for the next failure digest (services/notify.py)
        )
    _finish(attempt, LinkOutcome.FAILED, ckan_status=ckan_status, error=message)
    return LinkOutcome.FAILED.value
