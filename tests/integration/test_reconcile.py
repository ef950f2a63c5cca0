"""Reconciliation against moto over HTTP, a real CKAN and a real qcluster."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from tests.support.moto import drain_queue
from tests.support.processes import child_environ, manage_process, wait_for
from uploads import storage
from uploads.models import Discrepancy, DiscrepancyKind, DiscrepancyState, ReconcileRun, Upload, UploadState
from uploads.services import ingest, issue, link

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

CSV = b"station,temp\nA,12.5\n"


def put_file(site, ckan_world, name: str, *, resource_id: str | None = None, body: bytes = CSV) -> Upload:
    """Create a resource (unless given), issue a URL as the editor and PUT the file."""
    if resource_id is None:
        resource_id = site.create_resource(ckan_world.dataset["id"], name=name, url="https://example.com/x.csv")["id"]
    issued = issue.issue_upload(
        resource_id=resource_id,
        filename=name,
        content_type="text/csv",
        size=len(body),
        sha256="",
        client_token=ckan_world.editor.token,
        client_address=None,
    )
    if body:
        response = requests.put(issued.url, data=body, headers=issued.headers, timeout=10)
        assert response.status_code == 200
    return issued.upload


def link_now(upload: Upload) -> None:
    """What a delivered event does: mark the object seen, then link it."""
    ingest.mark_object_seen(upload, size=len(CSV), etag="", seen_at=timezone.now(), trigger="event")
    assert link.link_upload(upload_id=upload.id, trigger="event") == "linked"


def test_reconcile_fix_heals_lost_events_and_reports_each_finding_once(
    storage_world, ckan_world, ckan_settings, tmp_path
):
    site = ckan_world.site
    lost = [put_file(site, ckan_world, f"lost-{i}.csv") for i in range(2)]
    phantom = put_file(site, ckan_world, "phantom.csv")
    drifted = put_file(site, ckan_world, "drift.csv")
    older = put_file(site, ckan_world, "older.csv")
    newer = put_file(site, ckan_world, "newer.csv", resource_id=older.resource_id)
    expired = put_file(site, ckan_world, "never-put.csv", body=b"")
    drain_queue(storage_world)  # the events of every PUT are thrown away

    for upload in (phantom, drifted, older, newer):
        link_now(upload)
    storage_world.s3.delete_object(Bucket=storage_world.bucket, Key=phantom.key)
    site.resource_patch(drifted.resource_id, url="https://example.com/edited-by-hand.csv")
    Upload.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=2))
    orphan_key = f"resources/api_uploads/{uuid.uuid4()}/{uuid.uuid4()}/stray.csv"
    storage_world.s3.put_object(Bucket=storage_world.bucket, Key=orphan_key, Body=b"stray")

    env = child_environ(
        **storage_world.environ(), CKAN_URL=ckan_settings.url, CKAN_API_TOKEN=ckan_settings.sysadmin_token
    )
    with manage_process("qcluster", env=env, log_path=tmp_path / "qcluster.log"):
        out = io.StringIO()
        call_command("reconcile", "--fix", stdout=out)
        assert "Reconciliation" in out.getvalue()
        for upload in lost:
            wait_for(
                lambda u=upload: Upload.objects.get(pk=u.pk).state == UploadState.LINKED,
                timeout=60,
                what=f"{upload.filename} linked by the qcluster",
            )

    for upload in lost:
        upload.refresh_from_db()
        assert site.resource_show(upload.resource_id)["url"] == storage.public_url(upload.key)
    assert site.resource_show(drifted.resource_id)["url"] == storage.public_url(drifted.key)
    assert Upload.objects.get(pk=expired.pk).state == UploadState.EXPIRED
    assert Upload.objects.get(pk=older.pk).state == UploadState.SUPERSEDED

    by_kind = {kind: list(Discrepancy.objects.filter(kind=kind)) for kind in DiscrepancyKind.values}
    assert {d.upload_id for d in by_kind["unevented"]} == {u.pk for u in lost}
    assert all(d.state == DiscrepancyState.HEALED for d in by_kind["unevented"])
    assert [d.key for d in by_kind["orphan"]] == [orphan_key]
    assert [d.upload_id for d in by_kind["expired"]] == [expired.pk]
    assert [d.upload_id for d in by_kind["phantom"]] == [phantom.pk]
    assert [d.upload_id for d in by_kind["drift"]] == [drifted.pk]
    assert by_kind["drift"][0].state == DiscrepancyState.HEALED
    assert [d.upload_id for d in by_kind["superseded"]] == [older.pk]
    assert by_kind["superseded"][0].detail["reclaimable_bytes"] == len(CSV)

    total = Discrepancy.objects.count()
    call_command("reconcile", stdout=io.StringIO())
    second = ReconcileRun.objects.latest("started_at")
    assert sum(second.counts["new"].values()) == 0
    assert Discrepancy.objects.count() == total
    assert set(Discrepancy.objects.filter(state=DiscrepancyState.OPEN).values_list("kind", flat=True)) == {
        "orphan",
        "phantom",
        "superseded",
    }
