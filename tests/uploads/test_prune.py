from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from tests.support.factories import make_upload
from uploads.models import EventAction, EventStatus, LinkAttempt, LinkOutcome, StorageEvent, Upload, UploadState
from uploads.services.prune import run_prune

pytestmark = pytest.mark.django_db

RETENTION = {"EVENT_RETENTION_DAYS": 30, "LINK_ATTEMPT_RETENTION_DAYS": 60, "EXPIRED_UPLOAD_RETENTION_DAYS": 10}


def event(upload: Upload | None, *, age_days: float, name: str) -> StorageEvent:
    when = timezone.now() - timedelta(days=age_days)
    return StorageEvent.objects.create(
        source="sqs",
        dedupe_key=name,
        status=EventStatus.MATCHED if upload else EventStatus.UNMATCHED,
        action=EventAction.CREATED,
        key=upload.key if upload else f"stray/{name}",
        upload=upload,
        first_received_at=when,
        last_received_at=when,
    )


def attempt(upload: Upload, *, age_days: float) -> LinkAttempt:
    return LinkAttempt.objects.create(
        upload=upload,
        started_at=timezone.now() - timedelta(days=age_days),
        trigger="event",
        outcome=LinkOutcome.RETRY,
    )


def old(days: float, **fields) -> Upload:
    when = timezone.now() - timedelta(days=days)
    return make_upload(issued_at=when, expires_at=when + timedelta(hours=1), **fields)


@pytest.fixture
def ledger():
    """Old and new rows of every kind; names say what should happen to each."""
    linked_old = old(400, state=UploadState.LINKED)
    failed_old = old(400, state=UploadState.FAILED)
    pending = old(400, state=UploadState.UPLOADED)  # not terminal: its events stay
    expired_old = old(20, state=UploadState.EXPIRED)
    aborted_old = old(20, state=UploadState.ABORTED)
    expired_new = old(5, state=UploadState.EXPIRED)
    issued_old = old(20, state=UploadState.ISSUED)  # still issued: the sweep's business
    rows = {
        "linked_old": linked_old,
        "failed_old": failed_old,
        "pending": pending,
        "expired_old": expired_old,
        "aborted_old": aborted_old,
        "expired_new": expired_new,
        "issued_old": issued_old,
    }
    events = {
        "gone_linked": event(linked_old, age_days=31, name="e1"),
        "gone_failed": event(failed_old, age_days=45, name="e2"),
        "gone_unmatched": event(None, age_days=31, name="e3"),
        "kept_recent": event(linked_old, age_days=29, name="e4"),
        "kept_pending": event(pending, age_days=100, name="e5"),
        "kept_recent_unmatched": event(None, age_days=1, name="e6"),
    }
    # A redelivery last week keeps an old event.
    redelivered = event(linked_old, age_days=100, name="e7")
    StorageEvent.objects.filter(pk=redelivered.pk).update(last_received_at=timezone.now() - timedelta(days=7))
    events["kept_redelivered"] = redelivered
    attempts = {
        "gone_1": attempt(linked_old, age_days=300),
        "gone_2": attempt(linked_old, age_days=200),
        "kept_last_old": attempt(linked_old, age_days=100),  # the last one, however old
        "kept_only": attempt(failed_old, age_days=390),
        "kept_recent": attempt(pending, age_days=10),
        "gone_before_recent": attempt(pending, age_days=70),
    }
    return rows, events, attempts


@override_settings(**RETENTION)
def test_dry_run_counts_and_removes_nothing_then_prune_removes_exactly_those(ledger):
    rows, events, attempts = ledger
    before = (Upload.objects.count(), StorageEvent.objects.count(), LinkAttempt.objects.count())

    out = StringIO()
    call_command("prune", "--dry-run", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert (report["dry_run"], report["events"], report["link_attempts"], report["uploads"]) == (True, 3, 3, 2)
    assert (Upload.objects.count(), StorageEvent.objects.count(), LinkAttempt.objects.count()) == before

    out = StringIO()
    call_command("prune", "--batch-size", "1", stdout=out)
    assert "3  storage events" in out.getvalue()
    assert "3  link attempts" in out.getvalue()
    assert "2  unused uploads" in out.getvalue()

    remaining_uploads = set(Upload.objects.values_list("pk", flat=True))
    assert remaining_uploads == {u.pk for name, u in rows.items() if name not in ("expired_old", "aborted_old")}
    remaining_events = set(StorageEvent.objects.values_list("pk", flat=True))
    assert remaining_events == {e.pk for name, e in events.items() if name.startswith("kept")}
    remaining_attempts = set(LinkAttempt.objects.values_list("pk", flat=True))
    assert remaining_attempts == {a.pk for name, a in attempts.items() if name.startswith("kept")}

    # Nothing left to do: a second run removes nothing.
    again = run_prune()
    assert (again.events, again.link_attempts, again.uploads) == (0, 0, 0)


@override_settings(**RETENTION)
def test_an_expired_upload_goes_with_its_attempts_and_its_events_lose_the_link():
    gone = old(20, state=UploadState.EXPIRED)
    attempt(gone, age_days=19)
    ev = event(gone, age_days=1, name="late")
    report = run_prune()
    assert report.uploads == 1
    assert not LinkAttempt.objects.filter(upload_id=gone.pk).exists()
    ev.refresh_from_db()
    assert ev.upload_id is None


@override_settings(**RETENTION)
def test_batches_keep_the_statement_count_per_batch_constant():
    for n in range(30):
        event(None, age_days=40, name=f"old-{n}")
    with CaptureQueriesContext(connection) as small:
        assert run_prune(batch_size=10).events == 30
    for n in range(60):
        event(None, age_days=40, name=f"old2-{n}")
    with CaptureQueriesContext(connection) as large:
        assert run_prune(batch_size=20).events == 60
    # 3 batches each time (plus one empty SELECT per kind): same statement count for twice the rows.
    assert len(large.captured_queries) == len(small.captured_queries)


def test_the_daily_schedule_exists():
    schedule = Schedule.objects.get(name="uploads: daily prune")
    assert (schedule.func, schedule.schedule_type) == ("uploads.tasks.prune_task", Schedule.DAILY)
