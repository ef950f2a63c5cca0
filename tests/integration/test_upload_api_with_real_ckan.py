"""The client API against a real CKAN (started by scripts/local_ckan.py) and a moto S3 server."""

from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.apps import apps
from django.core import serializers

from uploads.models import Upload

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db]


def ask_for_url(client, resource_id: str, token: str | None, **extra):
    body = {"resource_id": resource_id, "filename": "report 2024.csv", "content_type": "text/csv", **extra}
    headers = {"HTTP_AUTHORIZATION": token} if token else {}
    return client.post("/api/v1/uploads", data=json.dumps(body), content_type="application/json", **headers)


def test_an_organisation_editor_gets_a_url_that_accepts_the_file(client, storage_world, ckan_settings, ckan_world):
    resource = ckan_world.resource
    response = ask_for_url(client, resource["id"], ckan_world.editor.token, size=13)
    assert response.status_code == 201, response.content
    body = response.json()
    put = requests.put(body["upload_url"], data=b"id,value\n1,2\n", headers=body["headers"], timeout=10)
    assert put.status_code == 200
    head = storage_world.s3.head_object(Bucket=storage_world.bucket, Key=body["key"])
    assert head["ContentLength"] == 13

    upload = Upload.objects.get(pk=body["upload_id"])
    assert upload.requested_by == ckan_world.editor.name
    assert upload.package_id == ckan_world.dataset["id"]
    # The names people think in, kept from the answers the issuance already had.
    names = (upload.resource_name, upload.dataset_name, upload.dataset_title)
    assert names == ("report.csv", ckan_world.dataset["name"], ckan_world.dataset["title"])
    assert (upload.organization_name, upload.organization_title) == (ckan_world.org["name"], ckan_world.org["title"])


def test_the_permission_probe_changes_nothing_in_ckan(client, storage_world, ckan_settings, ckan_world):
    before = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert ask_for_url(client, ckan_world.resource["id"], ckan_world.editor.token).status_code == 201
    after = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert after == before


def test_a_user_who_can_only_view_gets_403_and_no_url(client, storage_world, ckan_settings, ckan_world):
    viewer = ckan_world.site.client(ckan_world.viewer.token)
    assert viewer.resource_show(ckan_world.resource["id"])["id"] == ckan_world.resource["id"]

    response = ask_for_url(client, ckan_world.resource["id"], ckan_world.viewer.token)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "upload_url" not in response.json()
    assert Upload.objects.count() == 0


def test_an_outsider_gets_403(client, storage_world, ckan_settings, ckan_world):
    assert ask_for_url(client, ckan_world.resource["id"], ckan_world.outsider.token).status_code == 403


def test_no_token_gets_401_and_an_unknown_resource_gets_404(client, storage_world, ckan_settings, ckan_world):
    assert ask_for_url(client, ckan_world.resource["id"], None).status_code == 401
    missing = ask_for_url(client, str(uuid.uuid4()), ckan_world.editor.token)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert Upload.objects.count() == 0


def test_resources_endpoint_creates_a_real_ckan_resource_and_returns_its_upload(
    client, storage_world, ckan_settings, ckan_world
):
    body = {
        "package_id": ckan_world.dataset["id"],
        "name": "New table",
        "description": "Made through the API",
        "filename": "table.csv",
        "content_type": "text/csv",
        "size": 4,
    }
    response = client.post(
        "/api/v1/resources",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=ckan_world.editor.token,
    )
    assert response.status_code == 201, response.content
    created = response.json()
    resource = ckan_world.site.resource_show(created["resource"]["id"])
    assert resource["name"] == "New table"
    assert resource["description"] == "Made through the API"
    assert resource["package_id"] == ckan_world.dataset["id"]
    upload = Upload.objects.get(pk=created["upload"]["upload_id"])
    assert upload.resource_id == resource["id"]
    assert (upload.resource_name, upload.dataset_title) == ("New table", ckan_world.dataset["title"])
    assert upload.organization_title == ckan_world.org["title"]
    assert (
        requests.put(
            created["upload"]["upload_url"], data=b"a,b\n", headers=created["upload"]["headers"], timeout=10
        ).status_code
        == 200
    )


def test_resources_endpoint_refuses_a_viewer(client, storage_world, ckan_settings, ckan_world):
    body = {"package_id": ckan_world.dataset["id"], "name": "Nope", "filename": "x.csv", "content_type": "text/csv"}
    response = client.post(
        "/api/v1/resources",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=ckan_world.viewer.token,
    )
    assert response.status_code == 403
    assert Upload.objects.count() == 0


def test_database_and_logs_hold_no_presigned_signature_and_no_token(
    client, storage_world, ckan_settings, ckan_world, caplog
):
    caplog.set_level(logging.DEBUG)
    signatures = []
    for token in (ckan_world.editor.token, ckan_world.viewer.token, None, ckan_world.editor.token):
        response = ask_for_url(client, ckan_world.resource["id"], token, size=3)
        if response.status_code == 201:
            url = response.json()["upload_url"]
            signatures.append(parse_qs(urlparse(url).query)["X-Amz-Signature"][0])
            put = requests.put(url, data=b"abc", headers=response.json()["headers"], timeout=10)
            assert put.status_code == 200
    assert len(signatures) == 2
    assert client.get(f"/api/v1/uploads/{Upload.objects.first().pk}").status_code == 200

    secrets = [ckan_world.editor.token, ckan_world.viewer.token, ckan_settings.sysadmin_token, *signatures]
    dump = "".join(
        serializers.serialize("json", model.objects.all())
        for model in apps.get_models()
        if model._meta.app_label in {"uploads", "django_q", "auth", "sessions"}
    )
    logs = "\n".join(record.getMessage() for record in caplog.records)
    assert "X-Amz-Signature" not in dump
    for secret in secrets:
        assert secret not in dump
        assert secret not in logs
