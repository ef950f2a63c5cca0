"""The client's ``complete`` and abort: "I am done, check now" and "forget this upload".

``complete`` never trusts the client: a single PUT is confirmed with a HEAD before anything
changes (absent: 409 ``not_uploaded``, nothing changed, call again); a multipart upload is
checked part by part against the store's own list and completed server side. Only then is the
object recorded as seen, which enqueues its link at once.

Network calls (HEAD, ListParts, CompleteMultipartUpload, AbortMultipartUpload) happen outside
any transaction; the ledger changes after them are conditional updates, so a concurrent event,
sweep or second call is a normal case.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from django.utils import timezone

from uploads import content_policy, storage
from uploads.models import Upload, UploadState
from uploads.services import ingest
from uploads.services.issue import UploadConflict, upload_plan
from uploads.validation import InvalidInput

log = logging.getLogger(__name__)

# At most this many part numbers are named in a 409 (the count is always given).
MAX_NAMED_PARTS = 50
_DONE = (UploadState.LINKED, UploadState.SUPERSEDED)


@dataclass(frozen=True)
class ClientPart:
    part_number: int
    etag: str


def _named(numbers: list[int]) -> list[int]:
    return numbers[:MAX_NAMED_PARTS]


def check_parts(upload: Upload, stored: list[storage.PartInfo], claimed: list[ClientPart] | None) -> None:
    """Refuse (409) a multipart upload whose parts are missing, of the wrong size, or not the client's."""
    plan = upload_plan(upload)
    by_number = {p.part_number: p for p in stored}
    missing = [n for n in range(1, plan.part_count + 1) if n not in by_number]
    if missing:
        raise UploadConflict(
            "parts_missing",
            f"{len(missing)} of {plan.part_count} parts are not in the bucket yet",
            missing=_named(missing),
            missing_count=len(missing),
        )
    extra = sorted(n for n in by_number if n > plan.part_count)
    wrong_size = [n for n in range(1, plan.part_count + 1) if by_number[n].size != plan.part_length(n)]
    if extra or wrong_size:
        raise UploadConflict(
            "part_size_mismatch",
            "some parts do not match the plan: every part but the last must be part_size bytes",
            parts=_named(wrong_size + extra),
            part_size=plan.part_size,
            part_count=plan.part_count,
        )
    if claimed:
        mismatched = sorted(
            c.part_number
            for c in claimed
            if c.part_number not in by_number
            or storage.normal_etag(c.etag) != storage.normal_etag(by_number[c.part_number].etag)
        )
        if mismatched:
            raise UploadConflict(
                "part_mismatch",
                "the bucket holds other parts than the ETags you sent (re-send those parts)",
                parts=_named(mismatched),
            )


def _finish_multipart(upload: Upload, claimed: list[ClientPart] | None) -> None:
    """Check every part and assemble the object; a store that already assembled it is fine."""
    try:
        stored = storage.list_parts(upload.key, upload_id=upload.multipart_upload_id)
    except storage.MultipartUploadGone:
        # Completed by an earlier call that did not get to record it, or aborted by the store:
        # the HEAD that follows tells which.
        return
    check_parts(upload, stored, claimed)
    try:
        storage.complete_multipart_upload(
            upload.key,
            upload_id=upload.multipart_upload_id,
            parts=stored,
            content_type=upload.content_type,
            content_disposition=_content_disposition(upload),
        )
    except storage.MultipartUploadGone:
        return


def _content_disposition(upload: Upload) -> str:
    """The disposition the object was issued with (stores that set it at completion need it again)."""
    try:
        return content_policy.decide(upload.content_type, upload.filename).content_disposition
    except InvalidInput:
        # An active type the operator no longer allows: never let the bucket serve it inline.
        return content_policy.ATTACHMENT


def complete_upload(*, upload: Upload, parts: list[ClientPart] | None = None) -> str:
    """The client says it is done: confirm the object (completing a multipart upload), then link now.

    Returns the upload's state afterwards. Raises UploadConflict (409) when the object is not
    there yet (``not_uploaded``), the parts are incomplete or different, or the upload was aborted.
    """
    if upload.state == UploadState.ABORTED:
        raise UploadConflict("aborted", "this upload was aborted")
    if upload.state in _DONE:
        return upload.state
    if upload.is_multipart and upload.state in (UploadState.ISSUED, UploadState.EXPIRED):
        _finish_multipart(upload, parts)
    info = storage.head_object(upload.key)
    if info is None:
        if upload.is_multipart:
            raise UploadConflict("upload_gone", "the multipart upload is gone and no object was assembled")
        raise UploadConflict("not_uploaded", "the object is not in the bucket yet: finish the PUT, then call again")
    ingest.record_client_complete(upload_id=upload.pk, info=info)
    return str(Upload.objects.values_list("state", flat=True).get(pk=upload.pk))


def abort_upload(*, upload_id: UUID) -> str:
    """Abort an unfinished upload: its parts are deleted in the bucket and it becomes ``aborted``."""
    upload = Upload.objects.get(pk=upload_id)
    if upload.state == UploadState.ABORTED:
        return upload.state
    if upload.state not in (UploadState.ISSUED, UploadState.EXPIRED):
        raise UploadConflict("already_uploaded", f"this upload is {upload.state}: there is nothing to abort")
    if upload.is_multipart:
        storage.abort_multipart_upload(upload.key, upload_id=upload.multipart_upload_id)
    if storage.head_object(upload.key) is not None:
        # The PUT (or an earlier completion) landed first: the file is there, let it be linked.
        raise UploadConflict("already_uploaded", "the object is already in the bucket: there is nothing to abort")
    moved = Upload.objects.filter(pk=upload_id, state__in=[UploadState.ISSUED, UploadState.EXPIRED]).update(
        state=UploadState.ABORTED, next_attempt_at=None, updated_at=timezone.now()
    )
    state = str(Upload.objects.values_list("state", flat=True).get(pk=upload_id))
    if not moved and state != UploadState.ABORTED:
        raise UploadConflict("already_uploaded", f"this upload is {state}: there is nothing to abort")
    log.info("upload %s aborted by its requester", upload_id)
    return state
