from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import responses
from django.test import override_settings
from django.utils import timezone

from tests.support.factories import make_upload as build_upload
from uploads import storage
from uploads.models import Discrepancy, DiscrepancyKind, DiscrepancyState, RunState, Upload, UploadState
from uploads.services import reconcile

CKAN = "http://ckan.example.test"
PREFIX = "resources/api_uploads/"
PACKAGE_ID = "9d2c1b0a-1111-4222-8333-444455556666"


@pytest.fixture
def fake_ckan():
    """A CKAN whose datasets are whatever the test puts in ``datasets`` (unit tests only).

    Datasets whose id the test adds to ``private`` are private.
    """
    datasets: dict[str, list[dict]] = {}
    private: set[str] = set()

    def package_show(request):
        package_id = json.loads(request.body)["id"]
        if package_id not in datasets:
            return (
                404,
                {},
                json.dumps({"success": False, "error": {"__type": "Not Found Error", "message": "Not found"}}),
            )
        result = {"id": package_id, "private": package_id in private, "resources": datasets[package_id]}
        return 200, {}, json.dumps({"success": True, "result": result})

    def resource_patch(request):
        body = json.loads(request.body)
        for resources in datasets.values():
            for resource in resources:
                if resource["id"] == body["id"]:
                    resource.update(body)
                    return 200, {}, json.dumps({"success": True, "result": resource})
        return 404, {}, json.dumps({"success": False, "error": {"__type": "Not Found Error", "message": "Not found"}})

    with (
        override_settings(CKAN_URL=CKAN, CKAN_API_TOKEN="service-token-xyz"),
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        mock.add_callback(responses.POST, f"{CKAN}/api/3/action/package_show", callback=package_show)
        mock.add_callback(responses.POST, f"{CKAN}/api/3/action/resource_patch", callback=resource_patch)
        mock.add_passthru("http://127.0.0.1")
        mock.datasets = datasets  # type: ignore[attr-defined]
        mock.private = private  # type: ignore[attr-defined]
        yield mock


def make_upload(world, *, state=UploadState.ISSUED, body: bytes | None = b"a,b\n1,2\n", resource_id=None, **fields):
    """A ledger row (and, unless body is None, its object in the moto bucket)."""
    now = timezone.now()
    values = {
        "package_id": PACKAGE_ID,
        "bucket": world.bucket,
        "issued_at": now - timedelta(minutes=30),
        "expires_at": now + timedelta(minutes=30),
        "state": state,
    }
    if body is not None:
        values["object_size"] = len(body)
    values.update(fields)
    upload = build_upload(resource_id=resource_id, **values)
    if body is not None:
        world.s3.put_object(Bucket=world.bucket, Key=upload.key, Body=body, ContentType="text/csv")
    if state == UploadState.LINKED and "linked_url" not in fields:
        Upload.objects.filter(pk=upload.pk).update(linked_at=now, linked_url=storage.public_url(upload.key))
        upload.refresh_from_db()
    return upload


def ckan_resource(upload, **overrides):
    resource = {"id": upload.resource_id, "url": storage.public_url(upload.key), "size": upload.object_size}
    resource.update(overrides)
    return resource


def open_of(kind):
    return list(Discrepancy.objects.filter(kind=kind, state=DiscrepancyState.OPEN))


@pytest.mark.django_db
def test_it_reports_an_object_never_evented_and_links_it_only_with_fix(
    storage_world, fake_ckan, enqueued, django_capture_on_commit_callbacks
):
    upload = make_upload(storage_world, state=UploadState.ISSUED)

    run = reconcile.run_reconcile()
    assert run.state == RunState.FINISHED
    assert run.objects_scanned == 1
    assert run.counts["found"]["unevented"] == 1
    [found] = open_of(DiscrepancyKind.UNEVENTED)
    assert found.upload_id == upload.id and found.key == upload.key and found.object_size == 8
    upload.refresh_from_db()
    assert upload.state == UploadState.ISSUED
    assert enqueued == []

    with django_capture_on_commit_callbacks(execute=True):
        fixed = reconcile.run_reconcile(fix=True, triggered_by="alice")
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert upload.object_size == 8
    # One link task, sent when the fix commits (the ORM broker's INSERT joins the transaction).
    assert [u for u, _ in enqueued] == [str(upload.id)]
    found.refresh_from_db()
    assert found.state == DiscrepancyState.HEALED
    assert found.resolved_by == "reconcile:alice"
    assert fixed.counts["new"]["unevented"] == 0
    assert fixed.counts["healed"]["unevented"] == 1


@pytest.mark.django_db
def test_it_reports_an_orphan_with_its_age_and_size_and_deletes_it_only_when_asked(storage_world, fake_ckan):
    key = f"{PREFIX}{uuid.uuid4()}/{uuid.uuid4()}/stray.bin"
    storage_world.s3.put_object(Bucket=storage_world.bucket, Key=key, Body=b"12345")
    storage_world.s3.put_object(Bucket=storage_world.bucket, Key=f"{PREFIX}not-our-layout.txt", Body=b"x")

    run = reconcile.run_reconcile(fix=True)
    orphans = {d.key: d for d in open_of(DiscrepancyKind.ORPHAN)}
    assert set(orphans) == {key, f"{PREFIX}not-our-layout.txt"}
    assert orphans[key].object_size == 5
    assert orphans[key].detail["size"] == 5
    assert 0 <= orphans[key].detail["age_days"] < 1
    assert run.counts["deleted"] == 0

    # Too young for --older-than 1: kept.
    reconcile.run_reconcile(delete_orphans_older_than_days=1)
    assert storage.head_object(key) is not None
    # Dry run: counted, kept.
    dry = reconcile.run_reconcile(delete_orphans_older_than_days=0, dry_run=True)
    assert dry.counts["would_delete"] == 2
    assert storage.head_object(key) is not None

    deleting = reconcile.run_reconcile(delete_orphans_older_than_days=0)
    assert deleting.counts["deleted"] == 2
    assert storage.head_object(key) is None
    orphans[key].refresh_from_db()
    assert orphans[key].state == DiscrepancyState.HEALED
    assert orphans[key].detail["deleted"] is True


@pytest.mark.django_db
def test_it_marks_an_expired_url_without_object_expired_only_with_fix(storage_world, fake_ckan):
    past = timezone.now() - timedelta(hours=2)
    stale = make_upload(storage_world, body=None, expires_at=past)
    fresh = make_upload(storage_world, body=None)

    reconcile.run_reconcile()
    [found] = open_of(DiscrepancyKind.EXPIRED)
    assert found.upload_id == stale.id
    stale.refresh_from_db()
    assert stale.state == UploadState.ISSUED

    reconcile.run_reconcile(fix=True)
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.state == UploadState.EXPIRED
    assert fresh.state == UploadState.ISSUED
    found.refresh_from_db()
    assert found.state == DiscrepancyState.HEALED


@pytest.mark.django_db
def test_it_reports_a_phantom_when_a_linked_object_is_gone(storage_world, fake_ckan):
    kept = make_upload(storage_world, state=UploadState.LINKED)
    gone = make_upload(storage_world, state=UploadState.LINKED)
    storage_world.s3.delete_object(Bucket=storage_world.bucket, Key=gone.key)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(kept), ckan_resource(gone)]

    run = reconcile.run_reconcile(fix=True)
    [phantom] = open_of(DiscrepancyKind.PHANTOM)
    assert phantom.upload_id == gone.id
    assert phantom.detail["linked_url"] == gone.linked_url
    assert run.counts["found"]["drift"] == 0
    assert run.resources_checked == 1  # the phantom is not compared with CKAN


@pytest.mark.django_db
def test_it_checks_ckan_with_one_call_per_dataset_and_repatches_drift_with_fix(storage_world, fake_ckan):
    other_package = "11111111-2222-4333-8444-555555555555"
    same = [make_upload(storage_world, state=UploadState.LINKED) for _ in range(3)]
    drifted = make_upload(storage_world, state=UploadState.LINKED, package_id=other_package)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(u) for u in same]
    fake_ckan.datasets[other_package] = [ckan_resource(drifted, url="https://elsewhere.example/edited.csv")]

    run = reconcile.run_reconcile()
    package_calls = [c for c in fake_ckan.calls if c.request.url.endswith("/package_show")]
    assert len(package_calls) == 2
    assert run.resources_checked == 4
    [drift] = open_of(DiscrepancyKind.DRIFT)
    assert drift.upload_id == drifted.id
    assert drift.detail["reason"] == "url"
    assert drift.detail["ckan_url"] == "https://elsewhere.example/edited.csv"

    reconcile.run_reconcile(fix=True, triggered_by="ops")
    assert fake_ckan.datasets[other_package][0]["url"] == storage.public_url(drifted.key)
    drift.refresh_from_db()
    assert drift.state == DiscrepancyState.HEALED
    assert drifted.link_attempts.get().trigger == "reconcile"

    again = reconcile.run_reconcile(fix=True)
    assert sum(again.counts["found"].values()) == 0


@pytest.mark.django_db
def test_it_reports_a_size_drift_and_a_resource_deleted_in_ckan(storage_world, fake_ckan):
    resized = make_upload(storage_world, state=UploadState.LINKED)
    deleted = make_upload(storage_world, state=UploadState.LINKED)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(resized, size=999)]

    reconcile.run_reconcile(fix=True)
    drifts = {d.upload_id: d for d in Discrepancy.objects.filter(kind=DiscrepancyKind.DRIFT)}
    assert drifts[resized.id].detail["reason"] == "size"
    assert drifts[resized.id].detail["ckan_size"] == 999
    assert drifts[resized.id].state == DiscrepancyState.HEALED
    assert fake_ckan.datasets[PACKAGE_ID][0]["size"] == 8
    assert drifts[deleted.id].detail["reason"] == "resource_deleted"
    assert drifts[deleted.id].state == DiscrepancyState.OPEN
    assert "not healable" in drifts[deleted.id].detail["heal"]


@pytest.mark.django_db
def test_it_reports_superseded_objects_as_reclaimable(storage_world, fake_ckan):
    resource_id = str(uuid.uuid4())
    old = make_upload(storage_world, state=UploadState.SUPERSEDED, resource_id=resource_id, body=b"old bytes")
    new = make_upload(storage_world, state=UploadState.LINKED, resource_id=resource_id)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(new)]

    run = reconcile.run_reconcile(fix=True)
    [superseded] = open_of(DiscrepancyKind.SUPERSEDED)
    assert superseded.upload_id == old.id
    assert superseded.detail["reclaimable_bytes"] == 9
    assert sum(run.counts["found"].values()) == 1
    assert storage.head_object(old.key) is not None


@pytest.mark.django_db
def test_a_second_run_finds_nothing_new_and_resolves_what_went_away(storage_world, fake_ckan):
    make_upload(storage_world, state=UploadState.SUPERSEDED)
    key = f"{PREFIX}{uuid.uuid4()}/{uuid.uuid4()}/stray.bin"
    storage_world.s3.put_object(Bucket=storage_world.bucket, Key=key, Body=b"1")

    first = reconcile.run_reconcile()
    second = reconcile.run_reconcile()
    assert sum(first.counts["new"].values()) == 2
    assert sum(second.counts["new"].values()) == 0
    assert sum(second.counts["found"].values()) == 2
    assert Discrepancy.objects.count() == 2
    assert set(Discrepancy.objects.values_list("last_seen_run", flat=True)) == {second.pk}

    storage_world.s3.delete_object(Bucket=storage_world.bucket, Key=key)
    third = reconcile.run_reconcile()
    assert third.counts["resolved"] == 1
    assert Discrepancy.objects.get(key=key).state == DiscrepancyState.RESOLVED


@pytest.mark.django_db
def test_an_ignored_finding_is_neither_reopened_nor_healed(storage_world, fake_ckan):
    upload = make_upload(storage_world, state=UploadState.ISSUED)
    reconcile.run_reconcile()
    [found] = open_of(DiscrepancyKind.UNEVENTED)
    assert reconcile.ignore_discrepancies(discrepancy_ids=[found.pk], actor="bob") == 1

    run = reconcile.run_reconcile(fix=True)
    assert run.counts["ignored"] == 1
    assert sum(run.counts["new"].values()) == 0
    upload.refresh_from_db()
    assert upload.state == UploadState.ISSUED
    found.refresh_from_db()
    assert found.state == DiscrepancyState.IGNORED and found.last_seen_run_id == run.pk


@pytest.mark.django_db
def test_a_dry_run_records_only_the_run(storage_world, fake_ckan):
    upload = make_upload(storage_world, state=UploadState.ISSUED)
    run = reconcile.run_reconcile(fix=True, dry_run=True)
    assert run.dry_run and not run.fix
    assert run.counts["found"]["unevented"] == 1
    assert run.counts["would_heal"]["unevented"] == 1
    assert Discrepancy.objects.count() == 0
    upload.refresh_from_db()
    assert upload.state == UploadState.ISSUED


@pytest.mark.django_db
def test_heal_from_the_admin_service_links_one_and_refuses_kinds_without_heal(storage_world, fake_ckan):
    upload = make_upload(storage_world, state=UploadState.EXPIRED)
    make_upload(storage_world, state=UploadState.SUPERSEDED)
    reconcile.run_reconcile()
    unevented = Discrepancy.objects.get(kind=DiscrepancyKind.UNEVENTED)
    superseded = Discrepancy.objects.get(kind=DiscrepancyKind.SUPERSEDED)

    message = reconcile.heal_discrepancy(discrepancy_id=unevented.pk, actor="carol")
    assert "link enqueued" in message
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    unevented.refresh_from_db()
    assert unevented.state == DiscrepancyState.HEALED and unevented.resolved_by == "carol"

    assert "no automatic heal" in reconcile.heal_discrepancy(discrepancy_id=superseded.pk, actor="carol")
    superseded.refresh_from_db()
    assert superseded.state == DiscrepancyState.OPEN
    assert "already healed" in reconcile.heal_discrepancy(discrepancy_id=unevented.pk, actor="carol")


@pytest.mark.django_db
def test_a_listing_failure_marks_the_run_failed_and_resolves_nothing(storage_world, fake_ckan):
    make_upload(storage_world, state=UploadState.SUPERSEDED)
    reconcile.run_reconcile()

    def broken_pages():
        raise storage.StorageError("listing 'resources/api_uploads/' failed: EndpointConnectionError")
        yield []

    with pytest.raises(storage.StorageError):
        reconcile.run_reconcile(pages=broken_pages())
    failed = reconcile.ReconcileRun.objects.order_by("-pk").first()
    assert failed.state == RunState.FAILED
    assert "EndpointConnectionError" in failed.error
    assert Discrepancy.objects.get().state == DiscrepancyState.OPEN


@pytest.mark.django_db
def test_a_ckan_outage_leaves_earlier_drift_open(storage_world, fake_ckan):
    upload = make_upload(storage_world, state=UploadState.LINKED)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(upload, url="https://edited.example/x.csv")]
    reconcile.run_reconcile()
    fake_ckan.replace(responses.POST, f"{CKAN}/api/3/action/package_show", status=503, json={"success": False})

    run = reconcile.run_reconcile()
    assert run.counts["ckan_errors"] == 1
    assert Discrepancy.objects.get(kind=DiscrepancyKind.DRIFT).state == DiscrepancyState.OPEN


@pytest.mark.django_db
def test_a_failed_upload_whose_object_is_in_the_bucket_is_reported_and_linked_with_fix(
    storage_world, fake_ckan, enqueued, django_capture_on_commit_callbacks
):
    # Every attempt ran before the PUT landed: the link never saw the object.
    upload = make_upload(storage_world, state=UploadState.FAILED, last_error="object not found in bucket", attempts=8)
    checked = make_upload(storage_world, state=UploadState.FAILED, last_error="CKAN refused the link: no")
    Upload.objects.filter(pk=checked.pk).update(
        object_etag=storage_world.s3.head_object(Bucket=storage_world.bucket, Key=checked.key)["ETag"].strip('"')
    )
    reconcile.run_reconcile()
    [found] = open_of(DiscrepancyKind.UNLINKED)
    assert found.upload_id == upload.id  # the failure that saw its object is not a blind spot: replay it
    with django_capture_on_commit_callbacks(execute=True):
        reconcile.run_reconcile(fix=True)
    upload.refresh_from_db()
    assert (upload.state, upload.attempts) == (UploadState.UPLOADED, 0)
    assert enqueued == [(str(upload.id), "reconcile")]
    found.refresh_from_db()
    assert found.state == DiscrepancyState.HEALED


@pytest.mark.django_db
def test_a_multipart_upload_unknown_to_the_ledger_is_reported_and_aborted_with_fix(storage_world, fake_ckan):
    known = make_upload(storage_world, body=None)
    known_id = storage_world.s3.create_multipart_upload(Bucket=storage_world.bucket, Key=known.key)["UploadId"]
    Upload.objects.filter(pk=known.pk).update(multipart_upload_id=known_id, part_size=5 * 1024**2, part_count=2)
    stray_key = f"{PREFIX}{uuid.uuid4()}/{uuid.uuid4()}/lost.bin"
    stray_id = storage_world.s3.create_multipart_upload(Bucket=storage_world.bucket, Key=stray_key)["UploadId"]

    run = reconcile.run_reconcile()
    [found] = open_of(DiscrepancyKind.STRAY_MULTIPART)
    assert (found.key, found.detail["upload_id"]) == (stray_key, stray_id)
    assert run.counts["found"]["stray_multipart"] == 1
    assert len(storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket)["Uploads"]) == 2

    reconcile.run_reconcile(fix=True)
    [left] = storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket)["Uploads"]
    assert left["UploadId"] == known_id
    found.refresh_from_db()
    assert found.state == DiscrepancyState.HEALED
    assert not open_of(DiscrepancyKind.STRAY_MULTIPART)


@pytest.mark.django_db
def test_an_object_put_after_its_upload_was_aborted_is_an_orphan(storage_world, fake_ckan):
    upload = make_upload(storage_world, state=UploadState.ABORTED)
    reconcile.run_reconcile()
    [found] = open_of(DiscrepancyKind.ORPHAN)
    assert found.key == upload.key


@pytest.fixture
def acl_reads(monkeypatch):
    """The keys whose ACL the scan asked the bucket for (the real call still happens)."""
    asked: list[str] = []
    real = storage.object_is_public

    def counting(key: str) -> bool | None:
        asked.append(key)
        return real(key)

    monkeypatch.setattr(storage, "object_is_public", counting)
    return asked


@pytest.mark.django_db
def test_without_object_acls_a_file_of_a_dataset_made_private_is_reported_with_what_to_do(
    storage_world, fake_ckan, acl_reads
):
    upload = make_upload(storage_world, state=UploadState.LINKED)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(upload)]
    assert sum(reconcile.run_reconcile().counts["found"].values()) == 0

    fake_ckan.private.add(PACKAGE_ID)
    run = reconcile.run_reconcile(fix=True)
    [exposure] = open_of(DiscrepancyKind.EXPOSURE)
    assert exposure.upload_id == upload.id
    assert exposure.detail["reason"] == "dataset_private"
    assert exposure.detail["operator_action"].startswith("not healable")
    assert run.counts["heal_failed"] == 1
    assert acl_reads == []


@pytest.mark.django_db
def test_with_the_opt_in_a_private_datasets_public_file_is_not_reported(storage_world, fake_ckan):
    upload = make_upload(storage_world, state=UploadState.LINKED, dataset_private=True)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(upload)]
    fake_ckan.private.add(PACKAGE_ID)
    with override_settings(PRIVATE_DATASET_UPLOADS="public"):
        assert reconcile.run_reconcile().counts["found"]["exposure"] == 0
    assert reconcile.run_reconcile().counts["found"]["exposure"] == 1


@pytest.mark.django_db
@override_settings(STORAGE_OBJECT_ACLS=True)
def test_with_object_acls_a_public_datasets_file_costs_no_acl_read_and_a_private_ones_does(
    storage_world, fake_ckan, acl_reads
):
    public = make_upload(storage_world, state=UploadState.LINKED)
    hidden = make_upload(storage_world, state=UploadState.LINKED, package_id="other-private")
    storage_world.s3.put_object_acl(Bucket=storage_world.bucket, Key=hidden.key, ACL="public-read")
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(public)]
    fake_ckan.datasets["other-private"] = [ckan_resource(hidden)]
    fake_ckan.private.add("other-private")

    reconcile.run_reconcile()
    assert acl_reads == [hidden.key]
    [exposure] = open_of(DiscrepancyKind.EXPOSURE)
    assert exposure.upload_id == hidden.id


@pytest.mark.django_db
@override_settings(STORAGE_OBJECT_ACLS=True)
def test_an_acl_read_failure_leaves_earlier_exposure_open(storage_world, fake_ckan, monkeypatch):
    upload = make_upload(storage_world, state=UploadState.LINKED)
    storage_world.s3.put_object_acl(Bucket=storage_world.bucket, Key=upload.key, ACL="public-read")
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(upload)]
    fake_ckan.private.add(PACKAGE_ID)
    reconcile.run_reconcile()

    def unreachable(key: str) -> bool:
        raise storage.StorageError("GET ACL failed: EndpointConnectionError")

    monkeypatch.setattr(storage, "object_is_public", unreachable)
    run = reconcile.run_reconcile()
    assert run.counts["storage_errors"] == 1
    assert Discrepancy.objects.get(kind=DiscrepancyKind.EXPOSURE).state == DiscrepancyState.OPEN


@pytest.mark.django_db
@override_settings(STORAGE_OBJECT_ACLS=True)
def test_a_heal_from_the_admin_reads_the_dataset_again_and_never_publishes_on_a_stale_finding(storage_world, fake_ckan):
    upload = make_upload(storage_world, state=UploadState.LINKED, dataset_private=True)
    fake_ckan.datasets[PACKAGE_ID] = [ckan_resource(upload)]
    reconcile.run_reconcile()
    [exposure] = open_of(DiscrepancyKind.EXPOSURE)
    assert exposure.detail["reason"] == "dataset_public"

    fake_ckan.private.add(PACKAGE_ID)  # private again before an operator clicks "heal"
    message = reconcile.heal_discrepancy(discrepancy_id=exposure.pk, actor="carol")
    assert "made private" in message
    assert storage.object_is_public(upload.key) is False
    upload.refresh_from_db()
    assert upload.dataset_private is True
