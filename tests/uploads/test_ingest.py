from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from tests.support.factories import make_upload as build_upload
from uploads.events import parse_r2_body, parse_s3_body
from uploads.models import EventStatus, StorageEvent, Upload, UploadState
from uploads.services import ingest
from uploads.services.link import OBJECT_NOT_FOUND
from uploads.storage import ObjectInfo

BUCKET = "ckan-uploads"
RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"


def make_upload(state: str = UploadState.ISSUED, **fields) -> Upload:
    return build_upload(resource_id=RESOURCE_ID, filename="my file.csv", bucket=BUCKET, state=state, **fields)


def r2_event(upload: Upload | None = None, *, action="PutObject", etag="abc123", key=None, when="2026-01-02T03:04:05Z"):
    body = {
        "action": action,
        "bucket": BUCKET,
        "object": {"key": key or upload.key, **({"size": 8, "eTag": etag} if action == "PutObject" else {})},
        "eventTime": when,
    }
    [event] = parse_r2_body(body)
    return event


@pytest.mark.django_db
def test_it_records_a_matched_event_moves_the_upload_and_enqueues_one_link(
    enqueued, django_capture_on_commit_callbacks
):
    upload = make_upload()
    with django_capture_on_commit_callbacks(execute=True):
        result = ingest.record_event(source="r2-queue", event=r2_event(upload))
    assert not result.duplicate
    stored = StorageEvent.objects.get()
    assert (stored.status, stored.action, stored.upload_id, stored.deliveries) == ("matched", "created", upload.id, 1)
    assert stored.payload["action"] == "PutObject"
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert (upload.object_size, upload.object_etag) == (8, "abc123")
    assert upload.object_seen_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert upload.next_attempt_at is not None
    assert enqueued == [(str(upload.id), "event")]


@pytest.mark.django_db
def test_an_event_delivered_three_times_is_one_row_with_three_deliveries_and_one_transition(
    enqueued, django_capture_on_commit_callbacks
):
    upload = make_upload()
    event = r2_event(upload)
    results = []
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            results.append(ingest.record_event(source="r2-queue", event=event))
    assert [r.duplicate for r in results] == [False, True, True]
    stored = StorageEvent.objects.get()
    assert stored.deliveries == 3
    assert stored.last_received_at >= stored.first_received_at
    assert enqueued == [(str(upload.id), "event")]


@pytest.mark.django_db
def test_the_same_event_through_two_paths_is_one_row(enqueued):
    upload = make_upload()
    s3 = parse_s3_body(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-01-02T03:04:05Z",
                    "s3": {"bucket": {"name": BUCKET}, "object": {"key": upload.key, "size": 8, "eTag": "abc"}},
                }
            ]
        }
    )[0]
    ingest.record_event(source="sqs", event=s3)
    again = ingest.record_event(source="webhook", event=s3)
    assert again.duplicate
    assert StorageEvent.objects.get().source == "sqs"


@pytest.mark.django_db
def test_a_duplicate_changes_nothing_but_the_count(enqueued):
    upload = make_upload()
    event = r2_event(upload)
    ingest.record_event(source="r2-queue", event=event)
    Upload.objects.filter(pk=upload.pk).update(state=UploadState.FAILED, last_error="boom")
    ingest.record_event(source="r2-queue", event=event)
    upload.refresh_from_db()
    assert (upload.state, upload.last_error) == (UploadState.FAILED, "boom")


@pytest.mark.django_db
def test_an_event_for_an_unknown_key_is_kept_unmatched(enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = ingest.record_event(source="sqs", event=r2_event(key="somewhere/else.csv"))
    assert result.unmatched
    stored = StorageEvent.objects.get()
    assert (stored.status, stored.upload) == (EventStatus.UNMATCHED, None)
    assert enqueued == []


@pytest.mark.django_db
def test_an_event_from_another_bucket_does_not_match(enqueued):
    upload = make_upload()
    [event] = parse_r2_body({"action": "PutObject", "bucket": "other", "object": {"key": upload.key}})
    assert ingest.record_event(source="sqs", event=event).unmatched


@pytest.mark.django_db
def test_a_delete_event_flags_the_upload_and_a_later_put_clears_the_flag(enqueued):
    upload = make_upload(UploadState.LINKED, object_etag="abc123")
    ingest.record_event(source="sqs", event=r2_event(upload, action="DeleteObject", when="2026-01-02T03:00:00Z"))
    upload.refresh_from_db()
    assert upload.object_deleted_at == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert upload.state == UploadState.LINKED
    assert StorageEvent.objects.get().action == "deleted"

    ingest.record_event(source="sqs", event=r2_event(upload, etag="new-etag", when="2026-01-02T04:00:00Z"))
    upload.refresh_from_db()
    assert upload.object_deleted_at is None
    assert upload.state == UploadState.UPLOADED


@pytest.mark.django_db
def test_a_put_older_than_the_delete_leaves_the_flag(enqueued):
    upload = make_upload()
    ingest.record_event(source="sqs", event=r2_event(upload, action="DeleteObject", when="2026-01-02T05:00:00Z"))
    ingest.record_event(source="sqs", event=r2_event(upload, when="2026-01-02T04:00:00Z"))
    upload.refresh_from_db()
    assert upload.object_deleted_at == datetime(2026, 1, 2, 5, 0, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "recorded_etag", "event_etag", "moves"),
    [
        (UploadState.ISSUED, "", "abc", True),
        (UploadState.EXPIRED, "", "abc", True),
        (UploadState.FAILED, "abc", "abc", False),
        (UploadState.FAILED, "abc", "def", True),
        (UploadState.LINKED, "abc", '"ABC"', False),
        (UploadState.LINKED, "abc", "def", True),
        (UploadState.SUPERSEDED, "abc", "def", False),
    ],
)
def test_mark_object_seen_follows_the_state_rules(
    enqueued, django_capture_on_commit_callbacks, state, recorded_etag, event_etag, moves
):
    upload = make_upload(state, object_etag=recorded_etag, attempts=3, last_error="old")
    with django_capture_on_commit_callbacks(execute=True):
        moved = ingest.mark_object_seen(upload, size=5, etag=event_etag, seen_at=timezone.now(), trigger="reconcile")
    upload.refresh_from_db()
    assert moved is moves
    assert upload.state == (UploadState.UPLOADED if moves else state)
    assert enqueued == ([(str(upload.id), "reconcile")] if moves else [])
    if moves and state in (UploadState.FAILED, UploadState.LINKED):
        assert (upload.attempts, upload.last_error, upload.object_etag) == (0, "", "def")


@pytest.mark.django_db
def test_an_uploaded_upload_stays_uploaded_and_relinks_only_for_new_information(enqueued):
    upload = make_upload()
    ingest.mark_object_seen(upload, size=None, etag="", seen_at=timezone.now(), trigger="complete")
    assert ingest.mark_object_seen(upload, size=None, etag="", seen_at=timezone.now(), trigger="complete") is False
    assert ingest.mark_object_seen(upload, size=8, etag="abc", seen_at=timezone.now(), trigger="event") is True
    upload.refresh_from_db()
    assert (upload.state, upload.object_size, upload.object_etag) == (UploadState.UPLOADED, 8, "abc")


@pytest.mark.django_db
def test_an_unparseable_message_is_kept_raw_and_counted_once_per_body():
    first = ingest.record_unparseable(source="sqs", raw_body=b"\xffnot json\x00", error="the body is not UTF-8 text")
    again = ingest.record_unparseable(source="sqs", raw_body=b"\xffnot json\x00", error="the body is not UTF-8 text")
    assert (first.duplicate, again.duplicate) == (False, True)
    stored = StorageEvent.objects.get()
    assert (stored.status, stored.action, stored.deliveries) == ("unparseable", "unknown", 2)
    assert stored.raw_body == "\ufffdnot json\ufffd"
    assert stored.parse_error == "the body is not UTF-8 text"


@pytest.mark.django_db
def test_a_huge_unparseable_body_is_truncated_and_says_so():
    ingest.record_unparseable(source="r2-queue", raw_body="x" * 100_000, error="not JSON")
    stored = StorageEvent.objects.get()
    assert len(stored.raw_body) == ingest.MAX_RAW_BODY_CHARS
    assert "truncated" in stored.parse_error


def found(upload: Upload, etag: str = "abc") -> ObjectInfo:
    """What a HEAD of the upload's object answered."""
    return ObjectInfo(key=upload.key, size=8, etag=etag, last_modified=timezone.now(), content_type="text/csv")


@pytest.mark.django_db
def test_the_complete_hint_records_one_event_per_object_and_counts_repeats(
    enqueued, django_capture_on_commit_callbacks
):
    upload = make_upload()
    with django_capture_on_commit_callbacks(execute=True):
        first = ingest.record_client_complete(upload_id=upload.id, info=found(upload))
    with django_capture_on_commit_callbacks(execute=True):
        again = ingest.record_client_complete(upload_id=upload.id, info=found(upload))
    assert (first.duplicate, again.duplicate) == (False, True)
    stored = StorageEvent.objects.get()
    assert (stored.source, stored.upload_id, stored.deliveries, stored.etag) == ("client", upload.id, 2, "abc")
    upload.refresh_from_db()
    assert (upload.state, upload.object_size, upload.object_etag) == (UploadState.UPLOADED, 8, "abc")
    assert enqueued == [(str(upload.id), "complete")]


@pytest.mark.django_db
def test_the_complete_hint_on_a_linked_upload_changes_nothing(enqueued, django_capture_on_commit_callbacks):
    upload = make_upload(UploadState.LINKED, object_etag="abc")
    with django_capture_on_commit_callbacks(execute=True):
        ingest.record_client_complete(upload_id=upload.id, info=found(upload))
    upload.refresh_from_db()
    assert upload.state == UploadState.LINKED
    assert enqueued == []


@pytest.mark.django_db
def test_the_complete_hint_for_an_unknown_upload_raises_does_not_exist():
    ghost = Upload(id=uuid.uuid4(), key="k")
    with pytest.raises(Upload.DoesNotExist):
        ingest.record_client_complete(upload_id=ghost.id, info=found(ghost))
    assert not StorageEvent.objects.exists()


@pytest.mark.django_db
def test_a_link_that_found_no_object_runs_now_when_an_event_says_it_is_there(
    enqueued, django_capture_on_commit_callbacks
):
    later = timezone.now() + timedelta(minutes=30)
    upload = make_upload(
        UploadState.UPLOADED,
        object_seen_at=timezone.now(),
        next_attempt_at=later,
        last_error=f"{OBJECT_NOT_FOUND} (not yet visible?)",
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest.record_event(source="sqs", event=r2_event(upload))
    upload.refresh_from_db()
    assert upload.next_attempt_at <= timezone.now()
    assert enqueued == [(str(upload.id), "event")]


@pytest.mark.django_db
def test_a_failed_upload_whose_every_attempt_ran_before_the_put_is_linked_on_complete(
    enqueued, django_capture_on_commit_callbacks
):
    upload = make_upload(
        UploadState.FAILED, attempts=8, last_error=f"{OBJECT_NOT_FOUND} (gave up after 8 attempts)", object_etag=""
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest.record_client_complete(upload_id=upload.id, info=found(upload))
    upload.refresh_from_db()
    assert (upload.state, upload.attempts, upload.last_error) == (UploadState.UPLOADED, 0, "")
    assert enqueued == [(str(upload.id), "complete")]


@pytest.mark.django_db
def test_a_failed_upload_whose_object_was_checked_ignores_a_repeat_of_the_same_object(
    enqueued, django_capture_on_commit_callbacks
):
    upload = make_upload(
        UploadState.FAILED, last_error="size mismatch: declared 9 bytes, object has 8", object_etag="abc"
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest.record_client_complete(upload_id=upload.id, info=found(upload, etag="abc"))
    with django_capture_on_commit_callbacks(execute=True):
        ingest.record_event(source="sqs", event=r2_event(upload, etag="abc"))
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED
    assert enqueued == []


@pytest.mark.django_db
def test_an_aborted_upload_ignores_a_late_object(enqueued, django_capture_on_commit_callbacks):
    upload = make_upload(UploadState.ABORTED)
    with django_capture_on_commit_callbacks(execute=True):
        ingest.record_event(source="sqs", event=r2_event(upload))
    upload.refresh_from_db()
    assert upload.state == UploadState.ABORTED
    assert enqueued == []
