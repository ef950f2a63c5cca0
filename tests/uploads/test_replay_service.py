from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.dashboard.conftest import make_upload, queued_links
from uploads.models import UploadState
from uploads.services.replay import replay_uploads, select_uploads_for_replay


@pytest.mark.django_db
def test_it_resets_failed_uploads_and_queues_them_after_commit(django_capture_on_commit_callbacks):
    upload = make_upload(state=UploadState.FAILED, attempts=8, last_error="CKAN 500 eight times")
    with django_capture_on_commit_callbacks(execute=True):
        result = replay_uploads(upload_ids=[upload.pk], by="otto")
    assert result.replayed == [upload.pk] and result.skipped == {}
    upload.refresh_from_db()
    assert (upload.state, upload.attempts, upload.last_error) == (UploadState.UPLOADED, 0, "CKAN 500 eight times")
    assert queued_links() == [(str(upload.pk), "replay", "otto")]


@pytest.mark.django_db
def test_it_skips_what_cannot_be_replayed_and_says_why(django_capture_on_commit_callbacks):
    linked = make_upload(state=UploadState.LINKED)
    superseded = make_upload(state=UploadState.SUPERSEDED)
    issued = make_upload(state=UploadState.ISSUED)
    expired = make_upload(state=UploadState.EXPIRED)
    claimed = make_upload(state=UploadState.FAILED, claim_token=uuid.uuid4())
    missing = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=True):
        result = replay_uploads(
            upload_ids=[linked.pk, superseded.pk, issued.pk, expired.pk, claimed.pk, missing], by="otto"
        )
    assert result.replayed == []
    assert result.skipped == {
        linked.pk: "already linked: nothing to do",
        superseded.pk: "superseded by a newer upload of the same resource",
        issued.pk: "no object has been seen for it yet: nothing to link",
        expired.pk: "its URL expired and no object was ever seen",
        claimed.pk: "a worker is linking it right now",
        missing: "no such upload",
    }
    assert queued_links() == []
    linked.refresh_from_db()
    assert linked.state == UploadState.LINKED


@pytest.mark.django_db
def test_the_selector_applies_every_filter():
    now = timezone.now()
    match = make_upload(
        state=UploadState.FAILED, requested_by="bob", package_id="ds", issued_at=now - timedelta(days=2)
    )
    make_upload(state=UploadState.FAILED, requested_by="eve", package_id="ds", issued_at=now - timedelta(days=2))
    make_upload(state=UploadState.LINKED, requested_by="bob", package_id="ds", issued_at=now - timedelta(days=2))
    make_upload(state=UploadState.FAILED, requested_by="bob", package_id="ds", issued_at=now - timedelta(days=9))
    selected = select_uploads_for_replay(
        state="failed",
        requester="bob",
        package_id="ds",
        resource_id=match.resource_id,
        since=now - timedelta(days=3),
        until=now,
    )
    assert list(selected) == [match]
