"""The Azure Blob store against a real Azurite over HTTP: SAS PUT, blocks, HEAD, listing, delete."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.test import override_settings

from uploads import storage
from uploads.stores import azure as azure_store

KEY = "resources/api_uploads/r1/u1/my file ü.csv"
KEY_NAME = "resources/api_uploads/r1/u2/plain.csv"
DATA = b"station,temp\nA,12.5\n"


def put(signed: storage.PresignedPut, data: bytes) -> requests.Response:
    return requests.put(signed.url, data=data, headers=signed.headers, timeout=10)


def test_a_sas_url_uploads_one_blob_with_the_returned_headers(azure_world):
    signed = storage.presign_put(KEY, content_type="text/csv", content_length=len(DATA), expires_in=600)
    assert signed.headers["x-ms-blob-type"] == "BlockBlob"
    assert signed.headers["Content-Type"] == "text/csv"
    assert signed.headers["Content-Length"] == str(len(DATA))
    query = parse_qs(urlparse(signed.url).query)
    assert query["sp"] == ["cw"]  # create and write: no read, list or delete
    assert query["sr"] == ["b"]  # one blob, not the container

    assert put(signed, DATA).status_code == 201
    info = storage.head_object(KEY)
    assert info is not None
    assert (info.key, info.size, info.content_type) == (KEY, len(DATA), "text/csv")
    assert info.etag and not info.etag.startswith('"')
    assert info.last_modified is not None
    blob = azure_world.container_client().download_blob(KEY).readall()
    assert blob == DATA


def test_a_sas_url_is_refused_for_another_blob_for_reading_and_after_expiry(azure_world):
    signed = storage.presign_put(KEY, content_type="text/csv", content_length=len(DATA), expires_in=600)
    other = signed.url.replace("my%20file", "other%20file")
    assert other != signed.url
    assert requests.put(other, data=DATA, headers=signed.headers, timeout=10).status_code == 403
    assert requests.get(signed.url, timeout=10).status_code == 403
    assert storage.head_object(KEY.replace("my file", "other file")) is None

    short = storage.presign_put(KEY, content_type="text/csv", content_length=len(DATA), expires_in=1)
    time.sleep(2.5)
    assert put(short, DATA).status_code == 403
    assert storage.head_object(KEY) is None


def test_the_disposition_is_stored_with_the_blob(azure_world):
    signed = storage.presign_put(
        KEY, content_type="image/svg+xml", content_length=3, content_disposition="attachment", expires_in=600
    )
    assert put(signed, b"<a>").status_code == 201
    props = azure_world.container_client().get_blob_client(KEY).get_blob_properties()
    assert props.content_settings.content_disposition == "attachment"


def test_blocks_are_the_multipart_flow(azure_world):
    upload_id = storage.create_multipart_upload(KEY, content_type="text/csv", content_disposition="")
    assert upload_id
    assert storage.list_parts(KEY, upload_id=upload_id) == []
    chunks = [b"a" * 1000, b"b" * 1000, b"c" * 10]
    for number in (3, 1, 2):  # any order, as parallel part uploads arrive
        signed = storage.presign_upload_part(
            KEY, upload_id=upload_id, part_number=number, content_length=len(chunks[number - 1]), expires_in=600
        )
        assert put(signed, chunks[number - 1]).status_code == 201
    assert storage.head_object(KEY) is None  # staged blocks are not a blob yet
    parts = storage.list_parts(KEY, upload_id=upload_id)
    assert [(p.part_number, p.size) for p in parts] == [(1, 1000), (2, 1000), (3, 10)]

    storage.complete_multipart_upload(
        KEY, upload_id=upload_id, parts=parts, content_type="text/csv", content_disposition="attachment"
    )
    info = storage.head_object(KEY)
    assert info is not None and (info.size, info.content_type) == (2010, "text/csv")
    assert azure_world.container_client().download_blob(KEY).readall() == b"".join(chunks)
    with pytest.raises(storage.MultipartUploadGone):
        storage.list_parts(KEY, upload_id=upload_id)


def test_block_ids_are_equal_length_and_read_back():
    ids = {azure_store.block_id(n) for n in (1, 9, 10_000, 50_000)}
    assert len({len(i) for i in ids}) == 1
    assert [azure_store.part_number_of(azure_store.block_name(n)) for n in (1, 10_000)] == [1, 10_000]
    assert azure_store.part_number_of("not-ours") is None
    assert azure_store.part_number_of("part-12") is None


def test_listing_pages_carry_size_etag_and_time_and_delete_removes(azure_world):
    container = azure_world.container_client()
    for i in range(3):
        container.upload_blob(f"resources/api_uploads/x/{i}.csv", b"x" * (i + 1))
    container.upload_blob("elsewhere/y.csv", b"y")
    pages = list(storage.iter_object_pages("resources/api_uploads/", page_size=2))
    assert [len(page) for page in pages] == [2, 1]
    objects = [obj for page in pages for obj in page]
    assert [(o.key, o.size) for o in objects] == [(f"resources/api_uploads/x/{i}.csv", i + 1) for i in range(3)]
    assert all(o.etag and o.last_modified for o in objects)

    storage.delete_object("resources/api_uploads/x/0.csv")
    storage.delete_object("resources/api_uploads/x/0.csv")  # already gone: fine
    assert storage.head_object("resources/api_uploads/x/0.csv") is None
    assert list(storage.iter_multipart_upload_pages("resources/api_uploads/")) == []


def test_capabilities_public_url_and_bucket_name(azure_world):
    assert storage.bucket_name() == azure_world.container
    assert storage.can(storage.Capability.MULTIPART)
    assert not storage.can(storage.Capability.OBJECT_ACLS)
    with pytest.raises(storage.StorageError, match="no per-object ACLs"):
        storage.object_is_public(KEY)
    assert storage.public_url(KEY) == (
        f"{azure_world.azurite.blob_endpoint}/{azure_world.container}/resources/api_uploads/r1/u1/my%20file%20%C3%BC.csv"
    )
    with override_settings(STORAGE_PUBLIC_BASE_URL="https://files.example.org"):
        assert storage.public_url("a b.csv") == "https://files.example.org/a%20b.csv"


def test_an_unreachable_account_is_a_storage_error(azure_world):
    with override_settings(AZURE_STORAGE_ENDPOINT="http://127.0.0.1:9/devstoreaccount1"):
        with pytest.raises(storage.StorageError) as caught:
            storage.head_object(KEY)
        assert "127.0.0.1" not in str(caught.value)
        with pytest.raises(storage.StorageError):
            list(storage.iter_object_pages(""))


def test_unconfigured_azure_says_what_is_missing():
    with override_settings(STORAGE_BACKEND="azure", AZURE_STORAGE_CONTAINER="", AZURE_STORAGE_CONNECTION_STRING=""):
        assert not storage.is_configured()
        with pytest.raises(storage.StorageNotConfigured, match="AZURE_STORAGE_CONTAINER"):
            storage.head_object(KEY)


def test_a_connection_string_works_like_account_and_key(azure_world):
    from tests.support.azurite import ACCOUNT, KEY

    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={azure_world.azurite.blob_endpoint};"
    )
    with override_settings(AZURE_STORAGE_ACCOUNT="", AZURE_STORAGE_KEY="", AZURE_STORAGE_CONNECTION_STRING=connection):
        signed = storage.presign_put(KEY_NAME, content_type="text/csv", content_length=len(DATA), expires_in=600)
        assert put(signed, DATA).status_code == 201
        assert storage.head_object(KEY_NAME) is not None
        assert storage.public_url(KEY_NAME) == f"{azure_world.azurite.blob_endpoint}/{azure_world.container}/{KEY_NAME}"


def test_a_connection_string_without_an_account_key_cannot_sign(azure_world):
    connection = f"BlobEndpoint={azure_world.azurite.blob_endpoint};SharedAccessSignature=sv=2020-01-01&sig=x"
    with override_settings(AZURE_STORAGE_ACCOUNT="", AZURE_STORAGE_KEY="", AZURE_STORAGE_CONNECTION_STRING=connection):
        with pytest.raises(storage.StorageError, match="needs the account key"):
            storage.presign_put(KEY_NAME, content_type="text/csv", content_length=1, expires_in=600)
