"""Issuance in the s3filestore link style through the API (CKAN faked; the bucket is moto)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.uploads.test_api_uploads import RESOURCE_ID, fake_ckan, package_result, post_upload  # noqa: F401
from uploads.models import Upload

S3FS = {"LINK_STYLE": "s3filestore", "S3FILESTORE_STORAGE_PATH": "site", "STORAGE_OBJECT_ACLS": True}
BODY = {"resource_id": RESOURCE_ID, "filename": "Rain Fall.csv", "content_type": "text/csv", "size": 8}


@pytest.mark.django_db
def test_a_private_datasets_file_is_issued_private_at_the_extensions_key(client, storage_world, fake_ckan):  # noqa: F811
    fake_ckan.replace(
        fake_ckan.POST, "http://ckan.example.test/api/3/action/package_show", json=package_result(private=True)
    )
    with override_settings(**S3FS):
        response = post_upload(client, BODY)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["key"] == f"site/resources/{RESOURCE_ID}/rain-fall.csv"
    assert body["headers"]["x-amz-acl"] == "private"
    assert body["headers"]["Content-Disposition"] == "attachment; filename=rain-fall.csv"
    assert Upload.objects.get(pk=body["upload_id"]).dataset_private is True


@pytest.mark.django_db
def test_the_same_name_again_gets_its_own_key(client, storage_world, fake_ckan):  # noqa: F811
    with override_settings(**S3FS):
        first = post_upload(client, BODY).json()
        second = post_upload(client, BODY).json()
    assert first["headers"]["x-amz-acl"] == "public-read"
    assert second["key"] == f"site/resources/{RESOURCE_ID}/rain-fall-{second['upload_id'].replace('-', '')[:8]}.csv"
    assert Upload.objects.count() == 2


@pytest.mark.parametrize(
    "in_transaction",
    [
        pytest.param(True, marks=pytest.mark.django_db, id="inside-a-transaction"),
        # The way a web worker records (autocommit, no savepoint): the ledger stays usable.
        pytest.param(False, marks=pytest.mark.django_db(transaction=True), id="autocommit"),
    ],
)
def test_two_uploads_racing_for_one_key_give_409_key_in_use_and_one_row(
    client,
    storage_world,
    fake_ckan,  # noqa: F811
    monkeypatch,
    in_transaction,
):
    from django.db import connection

    from uploads import layout

    # Both see the key free (as two requests at the same instant would).
    monkeypatch.setattr(layout, "build_upload_key", lambda *a, **k: f"site/resources/{RESOURCE_ID}/rain-fall.csv")
    with override_settings(**S3FS):
        first = post_upload(client, BODY)
        assert first.status_code == 201
        assert connection.in_atomic_block is in_transaction
        response = post_upload(client, BODY)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "key_in_use"
    assert [str(pk) for pk in Upload.objects.values_list("id", flat=True)] == [first.json()["upload_id"]]
