"""Replay: hand failed (or stuck) uploads back to the link service, on a person's request."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from uploads.models import LinkTrigger, Upload, UploadState
from uploads.services.dispatch import enqueue_link

log = logging.getLogger(__name__)

# Why an upload in each state is not replayed; states absent here are replayable.
SKIP_REASONS = {
    UploadState.LINKED: "already linked: nothing to do",
    UploadState.SUPERSEDED: "superseded by a newer upload of the same resource",
    UploadState.ISSUED: "no object has been seen for it yet: nothing to link",
    UploadState.EXPIRED: "its URL expired and no object was ever seen",
}
REPLAYABLE_STATES = (UploadState.FAILED, UploadState.UPLOADED)


@dataclass(frozen=True)
class ReplayPlanItem:
    """One upload and what a replay would do with it."""

    upload: Upload
    replay: bool
    reason: str


@dataclass
class ReplayResult:
    """What a replay did: the uploads handed to the link service, and those skipped with why."""

    replayed: list[UUID] = field(default_factory=list)
    skipped: dict[UUID, str] = field(default_factory=dict)


def replay_reason(upload: Upload) -> tuple[bool, str]:
    """(will it be replayed, why) for one upload in its current state."""
    if upload.state == UploadState.FAILED:
        return True, f"failed after {upload.attempts} attempt(s): link again"
    if upload.state == UploadState.UPLOADED:
        return True, "waiting for a retry: link now"
    return False, SKIP_REASONS.get(UploadState(upload.state), f"state {upload.state}")


def plan_replay(uploads: Iterable[Upload]) -> list[ReplayPlanItem]:
    """What replaying these uploads would do, one item each, without changing anything."""
    return [ReplayPlanItem(upload, *replay_reason(upload)) for upload in uploads]


def select_uploads_for_replay(
    *,
    state: str | None = UploadState.FAILED,
    requester: str | None = None,
    resource_id: str | None = None,
    package_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    target_kind: str | None = None,
    target_id: str | None = None,
    organization: str | None = None,
) -> QuerySet[Upload]:
    """Uploads matching the replay filters (issued_at in [since, until)), oldest first."""
    qs = Upload.objects.all()
    if target_kind:
        qs = qs.filter(target_kind=target_kind)
    if target_id:
        qs = qs.filter(target_id=target_id)
    if organization:
        qs = qs.filter(organization_name=organization)
    if state:
        qs = qs.filter(state=state)
    if requester:
        qs = qs.filter(requested_by=requester)
    if resource_id:
        qs = qs.filter(resource_id=resource_id)
    if package_id:
        qs = qs.filter(package_id=package_id)
    if since:
        qs = qs.filter(issued_at__gte=since)
    if until:
        qs = qs.filter(issued_at__lt=until)
    return qs.order_by("issued_at")


@transaction.atomic
def replay_uploads(*, upload_ids: Iterable[UUID], by: str) -> ReplayResult:
    """Put failed uploads back to `uploaded` (attempts reset) and ask a worker to link each now.

    The last error stays until the next attempt replaces it, so the page still says why it
    failed while the replay is queued. Linked, superseded, issued and expired uploads are
    skipped with the reason; an id that does not exist is skipped too.
    """
    ids = list(dict.fromkeys(upload_ids))
    result = ReplayResult()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.LINK_CLAIM_TIMEOUT_SECONDS)
    found = {u.id: u for u in Upload.objects.filter(id__in=ids).only("id", "state", "attempts")}
    for upload_id in ids:
        upload = found.get(upload_id)
        if upload is None:
            result.skipped[upload_id] = "no such upload"
            continue
        replay, reason = replay_reason(upload)
        if not replay:
            result.skipped[upload_id] = reason
            continue
        # Conditional UPDATE: if a worker changed the row since we read it, leave it alone (a
        # claim past its expiry belongs to a dead worker: the replay takes it back).
        changed = (
            Upload.objects.filter(id=upload_id, state__in=REPLAYABLE_STATES)
            .filter(Q(claim_token__isnull=True) | Q(claimed_at__lt=stale))
            .update(
                state=UploadState.UPLOADED,
                attempts=0,
                next_attempt_at=now,
                updated_at=now,
                claim_token=None,
                claimed_at=None,
            )
        )
        if not changed:
            result.skipped[upload_id] = "a worker is linking it right now"
            continue
        enqueue_link(upload_id, trigger=LinkTrigger.REPLAY, triggered_by=by)
        result.replayed.append(upload_id)
    log.info("replay by %s: %d queued, %d skipped", by, len(result.replayed), len(result.skipped))
    return result
