"""Link an uploaded object to its CKAN resource: claim, confirm with HEAD, patch, record.

Concurrency, in three layers, and no database transaction (nor SQLite's write lock) is ever
open while CKAN or the bucket answers:
- The claim on the upload is a lease: a conditional UPDATE (state, and ``claim_token IS NULL``
  or a claim older than LINK_CLAIM_TIMEOUT_SECONDS) sets ``claim_token`` and ``claimed_at``, so
  of two workers handed the same upload exactly one gets rowcount 1; the other returns ``noop``.
  The worker renews ``claimed_at`` (conditionally on its token) after the HEAD and before the
  patch; a SIGKILLed worker's claim is free once it is LINK_CLAIM_TIMEOUT_SECONDS old (30 s by
  default), for the sweep or any later task of the upload.
- Last writer wins per resource. CKAN has no conditional update, so the decision "is a newer
  object already linked?", the patch and the bookkeeping happen under a per-resource lease
  (``ResourceLease``): taken with a conditional UPDATE (free, or expired) that sets the holder
  (the claim token), an expiry and ``fence + 1``. A second link of the resource waits (polls)
  for it. Before the patch the holder renews the lease conditionally on its fence (a full
  LINK_CLAIM_TIMEOUT_SECONDS left, more than CKAN_TIMEOUT_SECONDS, so the lease cannot expire
  while CKAN answers); after the patch it releases the lease conditionally on the same fence,
  in the short transaction that records the link. If the fence is gone (the worker was frozen
  past its lease and another took it), the patch may have landed after a newer one: the lease
  is marked ``repatch``, the upload is retried, and the next holder writes the newest object of
  the resource into CKAN again.
- The sweep (and any later task) takes over claims and leases past their expiry (a killed
  worker). A slow worker checks its claim and fence before patching, so a taken-over claim is
  never patched by two workers at once.
"""

from __future__ import annotations

import logging
import random
import re
import time
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
from uploads.models import LinkAttempt, LinkOutcome, LinkTrigger, ResourceLease, Upload, UploadState
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
        if not _renew_claim(upload_id, claim):
            log.info("link %s (%s): claim taken over during the HEAD", upload_id, trigger)
            return LinkOutcome.NOOP.value
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
    """Take the row with a conditional UPDATE; None when there is nothing to do or someone else has it.

    A claim older than LINK_CLAIM_TIMEOUT_SECONDS belongs to a dead (or frozen) worker: it is
    taken over, and that worker's next conditional renewal fails, so it stops before patching.
    """
    states = [UploadState.UPLOADED, UploadState.LINKED] if force else [UploadState.UPLOADED]
    stale = now - timedelta(seconds=settings.LINK_CLAIM_TIMEOUT_SECONDS)
    rows = Upload.objects.filter(pk=upload_id, state__in=states).filter(
        Q(claim_token__isnull=True) | Q(claimed_at__lt=stale)
    )
    if not force and trigger in _HINT_TRIGGERS:
        rows = rows.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    token = uuid.uuid4()
    with transaction.atomic():
        if not rows.update(claim_token=token, claimed_at=now, attempts=F("attempts") + 1):
            return None
        attempts = Upload.objects.values_list("attempts", flat=True).get(pk=upload_id)
    return _Claim(token=token, attempts=attempts)


def _renew_claim(upload_id: UUID, claim: _Claim) -> bool:
    """Push the claim's expiry forward; False when it was taken over (then stop, do not patch)."""
    return bool(Upload.objects.filter(pk=upload_id, claim_token=claim.token).update(claimed_at=timezone.now()))


class _LeaseLost(Exception):
    """The resource's lease is no longer ours (we outlived it and another link took it)."""


def _acquire_lease(resource_id: str, upload_id: UUID, claim: _Claim) -> int | None:
    """Take the resource's lease (waiting while another link holds it); return our fence, or None.

    A conditional UPDATE in autocommit: no transaction stays open while we wait. None when the
    upload's own claim was taken over meanwhile, or the lease stayed held for two lease periods.
    """
    seconds = settings.LINK_CLAIM_TIMEOUT_SECONDS
    deadline = time.monotonic() + 2 * seconds
    delay = 0.02
    created = False
    while True:
        now = timezone.now()
        taken = (
            ResourceLease.objects.filter(resource_id=resource_id)
            .filter(Q(holder__isnull=True) | Q(expires_at__lt=now))
            .update(
                holder=claim.token,
                upload_id=upload_id,
                expires_at=now + timedelta(seconds=seconds),
                fence=F("fence") + 1,
            )
        )
        if taken:
            fence = ResourceLease.objects.filter(resource_id=resource_id, holder=claim.token).values_list(
                "fence", flat=True
            )
            return next(iter(fence), None)
        if not created:
            # The first link of a resource creates its row (a no-op when a concurrent link did).
            ResourceLease.objects.bulk_create([ResourceLease(resource_id=resource_id)], ignore_conflicts=True)
            created = True
            continue
        if time.monotonic() >= deadline or not _renew_claim(upload_id, claim):
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _renew_lease(resource_id: str, claim: _Claim, fence: int) -> None:
    """Fencing check before a patch: still ours, with a full lease period ahead; else _LeaseLost."""
    now = timezone.now()
    renewed = ResourceLease.objects.filter(resource_id=resource_id, holder=claim.token, fence=fence).update(
        expires_at=now + timedelta(seconds=settings.LINK_CLAIM_TIMEOUT_SECONDS)
    )
    if not renewed:
        raise _LeaseLost


def _release_lease(resource_id: str, claim: _Claim, fence: int, *, clear_repatch: bool = False) -> bool:
    """Fencing check after a patch, and release: True when nobody took the lease meanwhile."""
    fields: dict[str, Any] = {"holder": None, "upload_id": None, "expires_at": None}
    if clear_repatch:
        fields["repatch"] = False
    return bool(ResourceLease.objects.filter(resource_id=resource_id, holder=claim.token, fence=fence).update(**fields))


def _patch(upload: Upload, info: storage.ObjectInfo, *, file_id: str = "") -> None:
    """The target kind's patch with the service token, its errors sorted into transient and permanent."""
    try:
        targets.patch(upload, info, file_id=file_id)
    except ckan.CkanUnavailable as exc:
        raise _Transient(exc.message, ckan_status=exc.status or None) from None
    except ckan.CkanError as exc:
        raise _Permanent(f"CKAN refused the link: {exc.message}", ckan_status=exc.status or None) from None


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


def _ledger_info(upload: Upload) -> storage.ObjectInfo:
    """The object as the ledger last saw it (its link's HEAD), to write it into CKAN again."""
    return storage.ObjectInfo(
        key=upload.key,
        size=upload.object_size or 0,
        etag=upload.object_etag,
        last_modified=upload.object_last_modified,
        content_type=upload.object_content_type,
        sha256=upload.verified_sha256,
    )


def _decide_and_patch(
    upload_id: UUID, *, claim: _Claim, info: storage.ObjectInfo, force: bool, attempt: LinkAttempt, file_id: str = ""
) -> str:
    # The lease and "last writer wins" are per target: a resource, an organization's or a group's image.
    kind, target_id, resource_id = Upload.objects.values_list("target_kind", "target_id", "resource_id").get(
        pk=upload_id
    )
    lease_key = targets.lease_key(kind, target_id, resource_id)
    fence = _acquire_lease(lease_key, upload_id, claim)
    if fence is None:
        if not Upload.objects.filter(pk=upload_id, claim_token=claim.token).exists():
            return LinkOutcome.NOOP.value  # taken over while we waited: the new owner links it
        raise _Transient("another link of the same resource held it too long")
    try:
        return _patch_under_lease(
            upload_id,
            lease_key,
            targets.same_target(kind, target_id, resource_id),
            claim=claim,
            fence=fence,
            info=info,
            attempt=attempt,
            file_id=file_id,
        )
    except _LeaseLost:
        raise _Transient("lost the resource's lease before patching (the worker was too slow)") from None
    finally:
        _release_lease(lease_key, claim, fence)  # a no-op when the bookkeeping released it


def _patch_under_lease(
    upload_id: UUID,
    lease_key: str,
    same_target: Q,
    *,
    claim: _Claim,
    fence: int,
    info: storage.ObjectInfo,
    attempt: LinkAttempt,
    file_id: str,
) -> str:
    # Plain reads: the lease, not a row lock, keeps other links of this resource out.
    # Only the linked ones matter to the decision (and this upload): the history does not.
    siblings = list(Upload.objects.filter(same_target).filter(Q(state=UploadState.LINKED) | Q(pk=upload_id)))
    upload = next(s for s in siblings if s.pk == upload_id)
    if upload.claim_token != claim.token:
        # Our claim was taken over (we were too slow) and another worker owns the upload now.
        return LinkOutcome.NOOP.value
    newer = [
        s
        for s in siblings
        if s.pk != upload.pk and s.state == UploadState.LINKED and _order_key(s) > _order_key(upload)
    ]
    if newer:
        newest = max(newer, key=_order_key)
        if ResourceLease.objects.filter(resource_id=lease_key, repatch=True).exists():
            # A patch landed after its lease was lost: CKAN may show an older object. Write the newest again.
            _renew_lease(lease_key, claim, fence)
            _patch(newest, _ledger_info(newest), file_id=_register_file(newest))
            if _release_lease(lease_key, claim, fence, clear_repatch=True):
                log.warning("target %s: wrote the newest object (upload %s) into CKAN again", lease_key, newest.pk)
        with transaction.atomic():
            Upload.objects.filter(pk=upload.pk, claim_token=claim.token).update(
                state=UploadState.SUPERSEDED, claim_token=None, claimed_at=None, next_attempt_at=None, last_error=""
            )
            _finish(attempt, LinkOutcome.SUPERSEDED, error=f"a newer upload is linked: {newest.pk}")
        return LinkOutcome.SUPERSEDED.value

    # Fencing check before: the lease is ours for a full period, longer than CKAN may take.
    _renew_lease(lease_key, claim, fence)
    if not _renew_claim(upload_id, claim):
        return LinkOutcome.NOOP.value
    _patch(upload, info, file_id=file_id)  # no transaction open: tests assert it
    now = timezone.now()
    with transaction.atomic():
        # Fencing check after, and release, in the transaction that records the link.
        if not _release_lease(lease_key, claim, fence, clear_repatch=True):
            kept = False
        else:
            kept = True
            older_linked = [s.pk for s in siblings if s.pk != upload.pk and s.state == UploadState.LINKED]
            if older_linked:
                Upload.objects.filter(pk__in=older_linked, state=UploadState.LINKED).update(
                    state=UploadState.SUPERSEDED
                )
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
    if not kept:
        # Another link took the lease while CKAN answered: which patch landed last is unknown.
        ResourceLease.objects.filter(resource_id=lease_key).update(repatch=True)
        raise _Transient("lost the resource's lease while CKAN answered; the newest object will be written again")
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
