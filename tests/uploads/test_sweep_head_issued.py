"""The sweep heals a lost event in minutes: it HEADs uploads still `issued` and links those whose object is there.

The bucket is moto over real HTTP; CKAN is a fake (unit tests).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from tests.support.factories import make_upload
from tests.uploads import test_link
from tests.uploads.test_link import ok_patch, patches
from uploads import storage
from uploads.models import LinkAttempt, Upload, UploadState
from uploads.services.link import link_upload
from uploads.services.sweep import link_issued_objects, run_sweep

pytestmark = pytest.mark.django_db(transaction=True)

CSV = b"a,b\n1,2\n"
fake_ckan = test_link.fake_ckan  # the fixture


def issued(storage_world, *, age_seconds: float, put: bool, filename: str = "data.csv") -> Upload:
    issued_at = timezone.now() - timedelta(seconds=age_seconds)
    upload = make_upload(
        filename=filename,
        bucket=storage_world.bucket,
        content_type="text/csv",
        declared_size=len(CSV),
        issued_at=issued_at,
        expires_at=issued_at + timedelta(hours=1),
        state=UploadState.ISSUED,
    )
    if put:
        # A PUT whose event was lost, and whose client never called `complete`.
        storage_world.s3.put_object(Bucket=storage_world.bucket, Key=upload.key, Body=CSV, ContentType="text/csv")
    return upload


@pytest.fixture
def head_settings():
    with override_settings(SWEEP_HEAD_ISSUED_AFTER_SECONDS=120, SWEEP_HEAD_ISSUED_LIMIT=200):
        yield


def test_an_upload_whose_event_was_dropped_is_linked_by_the_sweep(
    storage_world, fake_ckan, enqueued, head_settings, monkeypatch
):
    ok_patch(fake_ckan)
    lost = issued(storage_world, age_seconds=180, put=True)
    in_transaction: list[bool] = []
    real_head = storage.head_object

    def head(key):
        in_transaction.append(connection.in_atomic_block)
        return real_head(key)

    monkeypatch.setattr(storage, "head_object", head)

    counts = run_sweep()

    assert counts["seen"] == 1
    assert in_transaction == [False]  # no transaction open across the HEAD
    upload = Upload.objects.get(pk=lost.pk)
    assert upload.state == UploadState.UPLOADED
    assert upload.object_size == len(CSV) and upload.object_etag
    assert enqueued == [(str(lost.pk), "sweep")]
    # The worker that receives the task links it like any other.
    monkeypatch.setattr(storage, "head_object", real_head)
    assert link_upload(upload_id=lost.pk, trigger="sweep") == "linked"
    assert Upload.objects.get(pk=lost.pk).state == UploadState.LINKED
    assert [p["url"] for p in patches(fake_ckan)] == [storage.public_url(lost.key)]
    assert LinkAttempt.objects.get(upload_id=lost.pk).trigger == "sweep"
    # Nothing left to do on the next run.
    assert run_sweep()["seen"] == 0


def test_a_not_yet_put_upload_and_a_young_one_are_left_alone(storage_world, enqueued, head_settings, monkeypatch):
    never_put = issued(storage_world, age_seconds=600, put=False, filename="never.csv")
    young = issued(storage_world, age_seconds=30, put=True, filename="young.csv")
    headed: list[str] = []
    real_head = storage.head_object
    monkeypatch.setattr(storage, "head_object", lambda key: headed.append(key) or real_head(key))

    assert run_sweep()["seen"] == 0

    assert headed == [never_put.key]  # the young one has its event (or `complete`) still on the way
    states = dict(Upload.objects.filter(pk__in=[never_put.pk, young.pk]).values_list("pk", "state"))
    assert states == {never_put.pk: UploadState.ISSUED, young.pk: UploadState.ISSUED}
    assert enqueued == []


def test_the_per_run_bound_is_honoured_and_the_next_run_looks_at_the_others(
    storage_world, enqueued, head_settings, monkeypatch
):
    empty = [issued(storage_world, age_seconds=900 - i, put=False, filename=f"empty{i}.csv") for i in range(2)]
    lost = [issued(storage_world, age_seconds=800 - i, put=True, filename=f"lost{i}.csv") for i in range(3)]
    headed: list[str] = []
    real_head = storage.head_object
    monkeypatch.setattr(storage, "head_object", lambda key: headed.append(key) or real_head(key))

    with override_settings(SWEEP_HEAD_ISSUED_LIMIT=3):
        first = run_sweep()
        assert len(headed) == 3
        # The two empty ones (least recently looked at) and the first lost one.
        assert headed == [empty[0].key, empty[1].key, lost[0].key]
        assert first["seen"] == 1
        second = run_sweep()
    assert len(headed) == 6
    # The empty ones were just looked at: the rest of the lost ones come first now.
    assert headed[3:5] == [lost[1].key, lost[2].key]
    assert second["seen"] == 2
    assert sorted(upload_id for upload_id, trigger in enqueued if trigger == "sweep") == sorted(str(u.pk) for u in lost)
    assert set(Upload.objects.filter(pk__in=[u.pk for u in lost]).values_list("state", flat=True)) == {
        UploadState.UPLOADED
    }

    with override_settings(SWEEP_HEAD_ISSUED_LIMIT=0):
        assert link_issued_objects(now=timezone.now()) == 0
    assert len(headed) == 6


def test_a_bucket_error_stops_the_looking_without_losing_anything(storage_world, enqueued, head_settings, monkeypatch):
    lost = issued(storage_world, age_seconds=300, put=True)

    def broken(key):
        raise storage.StorageError("HEAD failed: EndpointConnectionError")

    real_head = storage.head_object
    monkeypatch.setattr(storage, "head_object", broken)
    assert run_sweep()["seen"] == 0
    assert Upload.objects.get(pk=lost.pk).state == UploadState.ISSUED
    monkeypatch.setattr(storage, "head_object", real_head)
    assert run_sweep()["seen"] == 1
