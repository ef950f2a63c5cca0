from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.dashboard.conftest import make_upload, queued_links
from uploads.models import Upload, UploadState


def run(*args: str) -> str:
    out = StringIO()
    call_command("replay", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_dry_run_says_what_it_would_do_and_changes_nothing(django_capture_on_commit_callbacks):
    upload = make_upload(state=UploadState.FAILED, filename="a.csv", attempts=2)
    with django_capture_on_commit_callbacks(execute=True):
        out = run("--dry-run")
    assert f"replay {upload.pk} a.csv → {upload.resource_id}: failed after 2 attempt(s)" in out
    assert "dry run: would replay 1, skip 0" in out
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED
    assert queued_links() == []


@pytest.mark.django_db
def test_it_replays_the_filtered_uploads_oldest_first_up_to_the_limit(django_capture_on_commit_callbacks):
    now = timezone.now()
    oldest = make_upload(state=UploadState.FAILED, requested_by="bob", issued_at=now - timedelta(days=3))
    make_upload(state=UploadState.FAILED, requested_by="bob", issued_at=now - timedelta(days=1))
    make_upload(state=UploadState.FAILED, requested_by="eve", issued_at=now - timedelta(days=5))
    with django_capture_on_commit_callbacks(execute=True):
        out = run(
            "--requester", "bob", "--since", (now - timedelta(days=4)).date().isoformat(), "--limit", "1", "--by", "ops"
        )
    assert "replayed 1, skipped 0 (by ops)" in out
    assert queued_links() == [(str(oldest.pk), "replay", "ops")]
    assert Upload.objects.filter(state=UploadState.UPLOADED).get() == oldest


@pytest.mark.django_db
def test_it_reports_linked_uploads_as_skipped(django_capture_on_commit_callbacks):
    upload = make_upload(state=UploadState.LINKED)
    with django_capture_on_commit_callbacks(execute=True):
        out = run("--state", "linked", "--resource", upload.resource_id)
    assert f"skip   {upload.pk}" in out and "already linked" in out
    assert "replayed 0, skipped 1" in out


@pytest.mark.django_db
def test_it_refuses_a_bad_date():
    with pytest.raises(CommandError, match="not an ISO date"):
        run("--since", "last tuesday")
