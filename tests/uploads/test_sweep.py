from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from django_q.signing import SignedPackage

from uploads.models import Upload, UploadState
from uploads.services.sweep import run_sweep


def make(state: str = UploadState.UPLOADED, **fields) -> Upload:
    upload_id = uuid.uuid4()
    now = timezone.now()
    defaults = {
        "resource_id": "r-1",
        "filename": "a.csv",
        "content_type": "text/csv",
        "bucket": "b",
        "key": f"k/{upload_id}/a.csv",
        "issued_at": now,
        "expires_at": now + timedelta(hours=1),
    }
    defaults.update(fields)
    upload = Upload.objects.create(id=upload_id, state=state, **defaults)
    # updated_at is auto_now: set it through an UPDATE when a test needs an old row.
    if "updated_at" in fields:
        Upload.objects.filter(pk=upload_id).update(updated_at=fields["updated_at"])
    return upload


def queued_link_ids() -> list[str]:
    """Upload ids of the link tasks waiting in django-q2's ORM broker."""
    ids = []
    for row in OrmQ.objects.all():
        task = SignedPackage.loads(row.payload)
        if task["func"] == "uploads.tasks.link_upload_task":
            assert task["args"][1] == "retry"
            ids.append(task["args"][0])
    return ids


@pytest.fixture
def broker():
    """The ORM broker, not sync mode: the test reads what the sweep enqueued."""
    with override_settings(LINK_CLAIM_TIMEOUT_SECONDS=300, UPLOAD_EXPIRY_GRACE_SECONDS=900):
        yield


@pytest.mark.django_db(transaction=True)
def test_it_enqueues_due_retries_only(broker):
    now = timezone.now()
    due = make(next_attempt_at=now - timedelta(seconds=1))
    later = make(next_attempt_at=now + timedelta(minutes=5))
    claimed = make(next_attempt_at=now - timedelta(seconds=1), claim_token=uuid.uuid4(), claimed_at=now)
    failed = make(UploadState.FAILED, next_attempt_at=now - timedelta(seconds=1))
    fresh = make(next_attempt_at=None)
    lost = make(next_attempt_at=None, updated_at=now - timedelta(minutes=5))

    counts = run_sweep(now=now)

    assert counts["enqueued"] == 2
    assert sorted(queued_link_ids()) == sorted([str(due.pk), str(lost.pk)])
    for untouched in (later, claimed, failed, fresh):
        assert str(untouched.pk) not in queued_link_ids()


@pytest.mark.django_db(transaction=True)
def test_an_enqueued_retry_is_not_enqueued_again_until_its_task_could_be_lost(broker):
    now = timezone.now()
    upload = make(next_attempt_at=now - timedelta(seconds=1))
    run_sweep(now=now)
    assert run_sweep(now=now + timedelta(minutes=1))["enqueued"] == 0
    upload.refresh_from_db()
    assert upload.next_attempt_at == now + timedelta(seconds=300)
    assert run_sweep(now=now + timedelta(seconds=301))["enqueued"] == 1
    assert queued_link_ids() == [str(upload.pk)] * 2


@pytest.mark.django_db(transaction=True)
def test_it_releases_claims_held_past_the_timeout_so_they_become_due(broker):
    now = timezone.now()
    stuck = make(claim_token=uuid.uuid4(), claimed_at=now - timedelta(seconds=301), next_attempt_at=None)
    busy = make(claim_token=uuid.uuid4(), claimed_at=now - timedelta(seconds=10))

    counts = run_sweep(now=now)

    assert counts["released"] == 1
    stuck.refresh_from_db()
    busy.refresh_from_db()
    assert stuck.claim_token is None and stuck.claimed_at is None
    assert busy.claim_token is not None
    # Released and due in the same sweep: the link task for it is already queued.
    assert queued_link_ids() == [str(stuck.pk)]


@pytest.mark.django_db
def test_it_expires_issued_urls_past_expiry_plus_grace(broker):
    now = timezone.now()
    stale = make(UploadState.ISSUED, expires_at=now - timedelta(seconds=901))
    in_grace = make(UploadState.ISSUED, expires_at=now - timedelta(seconds=899))
    uploaded = make(UploadState.UPLOADED, expires_at=now - timedelta(days=1), next_attempt_at=now + timedelta(hours=1))

    counts = run_sweep(now=now)

    assert counts["expired"] == 1
    states = dict(Upload.objects.values_list("pk", "state"))
    assert states[stale.pk] == UploadState.EXPIRED
    assert states[in_grace.pk] == UploadState.ISSUED
    assert states[uploaded.pk] == UploadState.UPLOADED


@pytest.mark.django_db
def test_it_works_in_bounded_batches(broker):
    now = timezone.now()
    for _ in range(5):
        make(UploadState.ISSUED, expires_at=now - timedelta(days=1))
    assert run_sweep(now=now, batch_size=2)["expired"] == 2
    assert run_sweep(now=now, batch_size=2)["expired"] == 2
    assert run_sweep(now=now, batch_size=2)["expired"] == 1
    assert run_sweep(now=now, batch_size=2)["expired"] == 0


@pytest.mark.django_db
def test_a_migration_schedules_the_sweep_every_minute():
    schedule = Schedule.objects.get(func="uploads.tasks.sweep_task")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)
