from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from tests.support.factories import make_upload as build_upload
from uploads import storage
from uploads.models import LinkAttempt, LinkOutcome, Upload, UploadState
from uploads.services import link
from uploads.services.link import link_upload, retry_delay

CKAN = "http://ckan.example.test"
PATCH_URL = f"{CKAN}/api/3/action/resource_patch"
RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"
SERVICE_TOKEN = "service-token-xyz"


@pytest.fixture
def fake_ckan():
    """CKAN answering resource_patch (unit tests only: integration uses a real CKAN)."""
    with (
        override_settings(
            CKAN_URL=CKAN,
            CKAN_API_TOKEN=SERVICE_TOKEN,
            LINK_MAX_ATTEMPTS=3,
            LINK_RETRY_BASE_SECONDS=30,
            LINK_RETRY_MAX_SECONDS=3600,
        ),
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        mock.add_passthru("http://127.0.0.1")
        yield mock


def ok_patch(mock: responses.RequestsMock) -> None:
    mock.post(PATCH_URL, json={"success": True, "result": {"id": RESOURCE_ID}})


def patches(mock: responses.RequestsMock) -> list[dict]:
    return [json.loads(call.request.body) for call in mock.calls if call.request.url == PATCH_URL]


def make_upload(
    storage_world,
    *,
    body: bytes | None = b"a,b\n1,2\n",
    content_type: str = "text/csv",
    declared_size: int | None = 8,
    filename: str = "report 2024.csv",
    issued_at: datetime | None = None,
    state: str = UploadState.UPLOADED,
    put_content_type: str | None = None,
) -> Upload:
    now = issued_at or timezone.now()
    upload = build_upload(
        resource_id=RESOURCE_ID,
        filename=filename,
        content_type=content_type,
        declared_size=declared_size,
        bucket=storage_world.bucket,
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        state=state,
    )
    if body is not None:
        storage_world.s3.put_object(
            Bucket=storage_world.bucket, Key=upload.key, Body=body, ContentType=put_content_type or content_type
        )
    return upload


@pytest.mark.django_db
def test_it_links_an_uploaded_object_and_patches_ckan_with_what_the_head_saw(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world)

    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.LINKED

    [sent] = patches(fake_ckan)
    assert fake_ckan.calls[0].request.headers["Authorization"] == SERVICE_TOKEN
    assert sent["id"] == RESOURCE_ID
    assert sent["url"] == f"{storage_world.endpoint}/{storage_world.bucket}/{upload.key}"
    assert sent["size"] == 8
    assert sent["mimetype"] == "text/csv"
    assert sent["format"] == "CSV"
    assert "url_type" not in sent
    assert sent["hash"] == "md5:" + storage_world.s3.head_object(Bucket=storage_world.bucket, Key=upload.key)[
        "ETag"
    ].strip('"')
    # CKAN refuses an offset in last_modified: naive UTC, ISO 8601.
    parsed = datetime.fromisoformat(sent["last_modified"])
    assert parsed.tzinfo is None
    assert abs(parsed.replace(tzinfo=UTC) - timezone.now()) < timedelta(minutes=1)

    upload.refresh_from_db()
    assert upload.state == UploadState.LINKED
    assert upload.linked_url == sent["url"]
    assert upload.linked_at is not None
    assert upload.object_size == 8
    assert upload.object_content_type == "text/csv"
    assert upload.claim_token is None and upload.claimed_at is None
    assert upload.attempts == 1
    [attempt] = upload.link_attempts.all()
    assert (attempt.trigger, attempt.outcome, attempt.ckan_status) == ("event", "linked", 200)
    assert attempt.finished_at is not None


@pytest.mark.django_db
def test_the_url_quotes_the_key_and_uses_the_public_base(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world, filename="données (1).csv")
    with override_settings(STORAGE_PUBLIC_BASE_URL="https://files.example.org"):
        assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.LINKED
    [sent] = patches(fake_ckan)
    assert (
        sent["url"]
        == f"https://files.example.org/resources/api_uploads/{RESOURCE_ID}/{upload.pk}/donn%C3%A9es_%281%29.csv"
    )


@pytest.mark.django_db
def test_of_two_claims_on_the_same_upload_only_one_wins(storage_world, fake_ckan):
    upload = make_upload(storage_world)
    now = timezone.now()
    first = link._claim(upload.pk, trigger="event", force=False, now=now)
    second = link._claim(upload.pk, trigger="event", force=False, now=now)
    assert first is not None
    assert second is None
    # A worker arriving while the claim is held does nothing and touches no one.
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.NOOP
    assert patches(fake_ckan) == []
    upload.refresh_from_db()
    assert upload.claim_token == first.token
    assert upload.attempts == 1


@pytest.mark.django_db
def test_linking_an_already_linked_upload_again_is_a_noop(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world)
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.LINKED
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.NOOP
    assert link_upload(upload_id=upload.pk, trigger="replay", triggered_by="op") == LinkOutcome.NOOP
    assert len(patches(fake_ckan)) == 1
    assert LinkAttempt.objects.filter(upload=upload).count() == 1


@pytest.mark.django_db
def test_force_re_patches_a_linked_upload(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world)
    link_upload(upload_id=upload.pk, trigger="event")
    outcome = link_upload(upload_id=upload.pk, trigger="reconcile", triggered_by="scan", force=True)
    assert outcome == LinkOutcome.LINKED
    assert len(patches(fake_ckan)) == 2
    upload.refresh_from_db()
    assert upload.state == UploadState.LINKED
    assert list(upload.link_attempts.values_list("trigger", "triggered_by", "outcome")) == [
        ("reconcile", "scan", "linked"),
        ("event", "", "linked"),
    ]


@pytest.mark.django_db
def test_a_size_mismatch_fails_at_once_with_the_reason(storage_world, fake_ckan):
    upload = make_upload(storage_world, declared_size=100)
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.FAILED
    assert patches(fake_ckan) == []
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED
    assert upload.last_error == "size mismatch: declared 100 bytes, object has 8"
    assert upload.object_size == 8  # what it turned out to be is kept for stewards
    assert upload.claim_token is None
    [attempt] = upload.link_attempts.all()
    assert attempt.outcome == "failed" and "size mismatch" in attempt.error


@pytest.mark.django_db
def test_a_content_type_mismatch_fails_at_once(storage_world, fake_ckan):
    upload = make_upload(storage_world, put_content_type="application/zip")
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.FAILED
    upload.refresh_from_db()
    assert upload.last_error == "content type mismatch: declared 'text/csv', object has 'application/zip'"


@pytest.mark.django_db
def test_parameters_and_case_of_the_content_type_do_not_count_as_a_mismatch(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world, content_type="text/csv; charset=utf-8", put_content_type="Text/CSV")
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.LINKED


@pytest.mark.django_db
def test_a_sha256_mismatch_fails_and_a_match_is_sent_as_the_hash(storage_world, fake_ckan, monkeypatch):
    ok_patch(fake_ckan)
    declared = "ab" * 32
    bad = make_upload(storage_world, body=None)
    good = make_upload(storage_world, body=None)
    Upload.objects.filter(pk__in=[bad.pk, good.pk]).update(declared_sha256=declared)
    stored = {bad.key: "cd" * 32, good.key: declared}

    # moto does not return stored checksums on HEAD; R2 and S3 do.
    def head(key: str) -> storage.ObjectInfo:
        return storage.ObjectInfo(
            key=key, size=8, etag="x" * 32, last_modified=timezone.now(), content_type="text/csv", sha256=stored[key]
        )

    monkeypatch.setattr(storage, "head_object", head)
    assert link_upload(upload_id=bad.pk, trigger="event") == LinkOutcome.FAILED
    bad.refresh_from_db()
    assert bad.last_error == f"sha256 mismatch: declared {declared}, object has {'cd' * 32}"
    assert link_upload(upload_id=good.pk, trigger="event") == LinkOutcome.LINKED
    [sent] = patches(fake_ckan)
    assert sent["hash"] == f"sha256:{declared}"


@pytest.mark.django_db
def test_a_multipart_etag_is_not_sent_as_a_hash():
    upload = Upload(filename="a.csv", content_type="text/csv", key="k")
    info = storage.ObjectInfo(key="k", size=1, etag="9b2cf535f27731c974343645a3985328-3", last_modified=None)
    assert link.object_hash(upload, info) == ""
    assert "hash" not in link.ckan_fields(upload, info)


def test_the_format_comes_from_the_extension_then_the_content_type():
    assert link.resource_format("text/csv", "report.csv") == "CSV"
    assert link.resource_format("application/xml", "feed.xml") == "XML"
    assert link.resource_format("application/octet-stream", "data.parquet") == "PARQUET"
    assert link.resource_format("text/csv; charset=utf-8", "export") == "CSV"
    assert link.resource_format("application/json", "export") == "JSON"
    assert link.resource_format("application/octet-stream", "README") == ""


@pytest.mark.django_db
def test_ckan_unavailable_schedules_a_retry_with_backoff(storage_world, fake_ckan):
    fake_ckan.post(PATCH_URL, status=503, json={"success": False, "error": {"message": "down"}})
    upload = make_upload(storage_world)
    before = timezone.now()
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.RETRY
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert upload.attempts == 1
    assert upload.claim_token is None
    assert "503" in upload.last_error
    # First retry: base 30 s with equal jitter, so between 15 and 30 s from now.
    assert before + timedelta(seconds=15) <= upload.next_attempt_at <= timezone.now() + timedelta(seconds=30)
    [attempt] = upload.link_attempts.all()
    assert (attempt.outcome, attempt.ckan_status) == ("retry", 503)


@pytest.mark.django_db
def test_a_duplicate_event_waits_for_the_backoff_but_a_replay_does_not(storage_world, fake_ckan):
    fake_ckan.post(PATCH_URL, status=503, json={"success": False, "error": {"message": "down"}})
    upload = make_upload(storage_world)
    link_upload(upload_id=upload.pk, trigger="event")
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.NOOP
    assert len(patches(fake_ckan)) == 1
    assert link_upload(upload_id=upload.pk, trigger="replay", triggered_by="op") == LinkOutcome.RETRY
    assert len(patches(fake_ckan)) == 2


@pytest.mark.django_db
def test_transient_errors_fail_the_upload_once_the_attempts_are_spent(storage_world, fake_ckan):
    fake_ckan.post(PATCH_URL, body=requests.ConnectionError("refused"))
    upload = make_upload(storage_world)
    outcomes = []
    for _ in range(3):
        outcomes.append(link_upload(upload_id=upload.pk, trigger="retry"))
    assert outcomes == ["retry", "retry", "failed"]
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED
    assert upload.attempts == 3
    assert upload.last_error.endswith("(gave up after 3 attempts)")
    assert link_upload(upload_id=upload.pk, trigger="retry") == LinkOutcome.NOOP


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (403, {"__type": "Authorization Error", "message": "Access denied"}, "Access denied"),
        (404, {"__type": "Not Found Error", "message": "Not found: Resource was not found."}, "Not found"),
        (409, {"__type": "Validation Error", "size": ["Invalid integer"]}, "size: Invalid integer"),
    ],
)
def test_permanent_ckan_errors_fail_at_once_with_the_reason_and_status(storage_world, fake_ckan, status, error, reason):
    fake_ckan.post(PATCH_URL, status=status, json={"success": False, "error": error})
    upload = make_upload(storage_world)
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.FAILED
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED
    assert upload.last_error.startswith("CKAN refused the link: ")
    assert reason in upload.last_error
    assert upload.next_attempt_at is None
    [attempt] = upload.link_attempts.all()
    assert attempt.ckan_status == status


@pytest.mark.django_db
def test_a_missing_object_is_retried_then_fails_as_not_found(storage_world, fake_ckan):
    upload = make_upload(storage_world, body=None)
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.RETRY
    upload.refresh_from_db()
    assert upload.last_error.startswith("object not found in bucket")
    link_upload(upload_id=upload.pk, trigger="retry")
    assert link_upload(upload_id=upload.pk, trigger="retry") == LinkOutcome.FAILED
    upload.refresh_from_db()
    assert upload.last_error == "object not found in bucket (gave up after 3 attempts)"
    assert patches(fake_ckan) == []


@pytest.mark.django_db
def test_an_unreachable_bucket_is_transient(storage_world, fake_ckan, monkeypatch):
    upload = make_upload(storage_world)

    def head(key: str) -> storage.ObjectInfo:
        raise storage.StorageError(f"HEAD {key!r} failed: EndpointConnectionError")

    monkeypatch.setattr(storage, "head_object", head)
    assert link_upload(upload_id=upload.pk, trigger="event") == LinkOutcome.RETRY
    upload.refresh_from_db()
    assert "EndpointConnectionError" in upload.last_error
    assert upload.state == UploadState.UPLOADED


class EdgeRng(random.Random):
    def __init__(self, pick: str) -> None:
        super().__init__()
        self.pick = pick

    def uniform(self, a: float, b: float) -> float:
        return a if self.pick == "low" else b


@override_settings(LINK_RETRY_BASE_SECONDS=30, LINK_RETRY_MAX_SECONDS=3600)
def test_backoff_doubles_is_capped_and_its_jitter_stays_within_half_to_full():
    nominal = {1: 30, 2: 60, 3: 120, 7: 1920, 8: 3600, 9: 3600, 200: 3600}
    for attempts, expected in nominal.items():
        assert retry_delay(attempts, rng=EdgeRng("high")) == expected
        assert retry_delay(attempts, rng=EdgeRng("low")) == expected / 2
    samples = {retry_delay(4) for _ in range(200)}
    assert all(120 <= s <= 240 for s in samples)
    assert len(samples) > 100  # jitter really spreads retries out


@pytest.mark.django_db
def test_a_newer_object_linked_after_an_older_one_supersedes_it(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    t0 = timezone.now()
    older = make_upload(storage_world, issued_at=t0 - timedelta(minutes=5))
    newer = make_upload(storage_world, issued_at=t0)
    assert link_upload(upload_id=older.pk, trigger="event") == LinkOutcome.LINKED
    assert link_upload(upload_id=newer.pk, trigger="event") == LinkOutcome.LINKED
    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.state, newer.state) == (UploadState.SUPERSEDED, UploadState.LINKED)
    assert patches(fake_ckan)[-1]["url"].endswith(newer.key)


@pytest.mark.django_db
def test_an_older_object_arriving_after_a_newer_one_is_superseded_without_touching_ckan(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    t0 = timezone.now()
    older = make_upload(storage_world, issued_at=t0 - timedelta(minutes=5))
    newer = make_upload(storage_world, issued_at=t0)
    assert link_upload(upload_id=newer.pk, trigger="event") == LinkOutcome.LINKED
    assert link_upload(upload_id=older.pk, trigger="event") == LinkOutcome.SUPERSEDED
    assert len(patches(fake_ckan)) == 1
    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.state, newer.state) == (UploadState.SUPERSEDED, UploadState.LINKED)
    assert older.claim_token is None
    [attempt] = older.link_attempts.all()
    assert attempt.outcome == "superseded" and str(newer.pk) in attempt.error


@pytest.mark.django_db
def test_the_objects_last_modified_decides_before_the_issue_time(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    t0 = timezone.now()
    # Issued first, but its object was written later: it is the newer one.
    late_put = make_upload(storage_world, issued_at=t0 - timedelta(minutes=5))
    early_put = make_upload(storage_world, issued_at=t0)
    Upload.objects.filter(pk=early_put.pk).update(
        state=UploadState.LINKED, object_last_modified=t0 - timedelta(hours=1)
    )
    assert link_upload(upload_id=late_put.pk, trigger="event") == LinkOutcome.LINKED
    early_put.refresh_from_db()
    assert early_put.state == UploadState.SUPERSEDED


@pytest.mark.django_db
def test_a_worker_whose_claim_was_taken_back_does_not_patch(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world)
    claim = link._claim(upload.pk, trigger="event", force=False, now=timezone.now())
    info = storage.head_object(upload.key)
    Upload.objects.filter(pk=upload.pk).update(claim_token=uuid.uuid4())  # the sweep released it, another took it
    attempt = LinkAttempt(upload=upload, trigger="event", outcome=LinkOutcome.NOOP)
    outcome = link._decide_and_patch(upload.pk, claim=claim, info=info, force=False, attempt=attempt)
    assert outcome == LinkOutcome.NOOP
    assert patches(fake_ckan) == []


@pytest.mark.django_db(transaction=True)
def test_two_workers_linking_two_uploads_of_one_resource_at_once_leave_the_newest_in_ckan(storage_world, fake_ckan):
    t0 = timezone.now()
    older = make_upload(storage_world, issued_at=t0 - timedelta(minutes=5))
    newer = make_upload(storage_world, issued_at=t0)
    in_ckan: list[str] = []
    older_patching = threading.Event()

    def slow_patch(request):
        url = json.loads(request.body)["url"]
        if url.endswith(older.key):
            older_patching.set()
            time.sleep(0.5)  # the older patch is slow: without the per-resource lock it would land last
        in_ckan.append(url)
        return 200, {}, json.dumps({"success": True, "result": {"id": RESOURCE_ID}})

    fake_ckan.add_callback(responses.POST, PATCH_URL, callback=slow_patch)
    outcomes: dict[str, str] = {}

    def work(name: str, upload: Upload, wait_for_older: bool) -> None:
        try:
            if wait_for_older:
                older_patching.wait(timeout=10)
            outcomes[name] = link_upload(upload_id=upload.pk, trigger="event")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=work, args=("older", older, False)),
        threading.Thread(target=work, args=("newer", newer, True)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcomes == {"older": "linked", "newer": "linked"}
    assert in_ckan[-1].endswith(newer.key)
    states = dict(Upload.objects.filter(pk__in=[older.pk, newer.pk]).values_list("pk", "state"))
    assert states == {older.pk: UploadState.SUPERSEDED, newer.pk: UploadState.LINKED}
