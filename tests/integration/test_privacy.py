"""Private datasets stay private: issuance refuses, the scan reports and repairs (real CKAN, moto over HTTP)."""

from __future__ import annotations

import json

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from tests.support.ckan_site import make_world
from uploads import storage
from uploads.models import Discrepancy, DiscrepancyKind, DiscrepancyState, Upload
from uploads.services import ingest, issue, link, reconcile

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

CSV = b"station,temp\nA,12.5\n"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def ask_for_url(client, resource_id: str, token: str):
    body = {"resource_id": resource_id, "filename": "secret.csv", "content_type": "text/csv", "size": len(CSV)}
    return client.post(
        "/api/v1/uploads", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=token
    )


def linked_file(world) -> Upload:
    """Issue a URL for the world's resource as its editor, PUT the file and link it."""
    issued = issue.issue_upload(
        resource_id=world.resource["id"],
        filename="report.csv",
        content_type="text/csv",
        size=len(CSV),
        sha256="",
        client_token=world.editor.token,
        client_address=None,
    )
    assert requests.put(issued.url, data=CSV, headers=issued.headers, timeout=10).status_code == 200
    ingest.mark_object_seen(issued.upload, size=len(CSV), etag="", seen_at=timezone.now(), trigger="event")
    assert link.link_upload(upload_id=issued.upload.id, trigger="event") == "linked"
    return Upload.objects.get(pk=issued.upload.pk)


def anonymous_get(url: str) -> int:
    return requests.get(url, timeout=10).status_code


def everyone_may_read(storage_world, key: str) -> bool:
    grants = storage_world.s3.get_object_acl(Bucket=storage_world.bucket, Key=key)["Grants"]
    return any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ" for g in grants)


def exposures() -> list[Discrepancy]:
    return list(Discrepancy.objects.filter(kind=DiscrepancyKind.EXPOSURE).order_by("created_at"))


def test_a_private_datasets_resource_gets_409_private_dataset_and_no_upload(
    client, storage_world, ckan_settings, ckan_site
):
    world = make_world(ckan_site, "priv", private=True)
    response = ask_for_url(client, world.resource["id"], world.editor.token)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "private_dataset"
    assert "PRIVATE_DATASET_UPLOADS" in response.json()["error"]["message"]
    assert Upload.objects.count() == 0


def test_the_resources_endpoint_creates_no_resource_in_a_private_dataset(
    client, storage_world, ckan_settings, ckan_site
):
    world = make_world(ckan_site, "priv", private=True)
    body = {"package_id": world.dataset["id"], "name": "Hidden", "filename": "h.csv", "content_type": "text/csv"}
    response = client.post(
        "/api/v1/resources",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=world.editor.token,
    )
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "private_dataset"
    resources = ckan_site.action("package_show", id=world.dataset["id"])["resources"]
    assert [r["id"] for r in resources] == [world.resource["id"]]
    assert Upload.objects.count() == 0


def test_with_the_opt_in_a_private_datasets_file_is_issued_and_recorded_private(
    client, storage_world, ckan_settings, ckan_site
):
    world = make_world(ckan_site, "priv", private=True)
    with override_settings(PRIVATE_DATASET_UPLOADS="public"):
        response = ask_for_url(client, world.resource["id"], world.editor.token)
    assert response.status_code == 201, response.content
    assert Upload.objects.get(pk=response.json()["upload_id"]).dataset_private is True


def test_a_public_datasets_file_is_recorded_public(client, storage_world, ckan_settings, ckan_world):
    response = ask_for_url(client, ckan_world.resource["id"], ckan_world.editor.token)
    assert response.status_code == 201, response.content
    assert Upload.objects.get(pk=response.json()["upload_id"]).dataset_private is False


@override_settings(STORAGE_OBJECT_ACLS=True)
def test_with_object_acls_a_dataset_made_private_after_linking_is_reported_and_fixed(
    storage_world, ckan_settings, ckan_world
):
    upload = linked_file(ckan_world)
    assert upload.linked_url == storage.public_url(upload.key)
    assert anonymous_get(upload.linked_url) == 200

    ckan_world.site.action("package_patch", id=ckan_world.dataset["id"], private=True)
    reconcile.run_reconcile()
    [found] = exposures()
    assert found.state == DiscrepancyState.OPEN
    assert found.detail["reason"] == "dataset_private"
    assert found.detail["object_public"] is True
    assert anonymous_get(upload.linked_url) == 200  # a report changes nothing

    run = reconcile.run_reconcile(fix=True)
    assert run.counts["healed"]["exposure"] == 1
    found.refresh_from_db()
    assert found.state == DiscrepancyState.HEALED
    assert not everyone_may_read(storage_world, upload.key)
    assert anonymous_get(upload.linked_url) == 403
    assert Upload.objects.get(pk=upload.pk).dataset_private is True

    again = reconcile.run_reconcile(fix=True)
    assert again.counts["found"]["exposure"] == 0
    assert len(exposures()) == 1

    ckan_world.site.action("package_patch", id=ckan_world.dataset["id"], private=False)
    reconcile.run_reconcile(fix=True)
    latest = exposures()[-1]
    assert latest.pk != found.pk
    assert latest.detail["reason"] == "dataset_public"
    assert latest.state == DiscrepancyState.HEALED
    assert everyone_may_read(storage_world, upload.key)
    assert anonymous_get(upload.linked_url) == 200


def test_without_object_acls_an_exposed_file_is_reported_as_not_healable_with_what_to_do(
    storage_world, ckan_settings, ckan_world
):
    upload = linked_file(ckan_world)
    ckan_world.site.action("package_patch", id=ckan_world.dataset["id"], private=True)

    run = reconcile.run_reconcile(fix=True)
    [found] = exposures()
    assert found.state == DiscrepancyState.OPEN
    assert "R2" in found.detail["operator_action"]
    assert found.detail["heal"].startswith("not healable")
    assert run.counts["healed"]["exposure"] == 0
    assert run.counts["heal_failed"] == 1

    # Reported once: the next scan only marks it seen again.
    reconcile.run_reconcile()
    assert len(exposures()) == 1

    ckan_world.site.action("package_patch", id=ckan_world.dataset["id"], private=False)
    reconcile.run_reconcile()
    found.refresh_from_db()
    assert found.state == DiscrepancyState.RESOLVED
    assert Upload.objects.get(pk=upload.pk).dataset_private is False
