"""The multipart API, ``complete``, abort and who may use them, on moto over HTTP (CKAN faked)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses
from django.contrib.auth.models import Permission, User
from django.test import override_settings
from django.utils import timezone

from uploads.models import LinkTrigger, StorageEvent, Upload, UploadState
from uploads.services import sweep

CKAN = "http://ckan.example.test"
RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"
PACKAGE_ID = "9d2c1b0a-1111-4222-8333-444455556666"
MIB = 1024**2
USERS = {
    "alice-token": {"name": "alice", "id": "u-alice"},
    "alice-other-token": {"name": "alice", "id": "u-alice"},
    "bob-token": {"name": "bob", "id": "u-bob"},
}


@pytest.fixture
def fake_ckan():
    """CKAN where alice and bob may both update RESOURCE_ID (unit tests only)."""

    def user_show(request):
        user = USERS.get(request.headers.get("Authorization", ""))
        if user is None:
            return 403, {}, json.dumps({"success": False, "error": {"__type": "Authorization Error", "message": "no"}})
        return 200, {}, json.dumps({"success": True, "result": user})

    with (
        override_settings(CKAN_URL=CKAN, CKAN_API_TOKEN="service-token", MULTIPART_PART_SIZE=5 * MIB),
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        mock.post(
            f"{CKAN}/api/3/action/resource_patch",
            json={"success": True, "result": {"id": RESOURCE_ID, "package_id": PACKAGE_ID}},
        )
        mock.post(
            f"{CKAN}/api/3/action/resource_create",
            json={"success": True, "result": {"id": RESOURCE_ID, "package_id": PACKAGE_ID, "name": "big"}},
        )
        mock.post(
            f"{CKAN}/api/3/action/package_show",
            json={"success": True, "result": {"id": PACKAGE_ID, "private": False, "state": "active"}},
        )
        mock.add_callback(responses.POST, f"{CKAN}/api/3/action/user_show", callback=user_show)
        mock.add_passthru("http://127.0.0.1")
        yield mock


def call(client, method: str, path: str, body: dict | None = None, token: str | None = "alice-token"):
    headers = {"HTTP_AUTHORIZATION": token} if token else {}
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(path, data=data, content_type="application/json", **headers)


def issue(client, *, size: int, multipart: bool | None = True, token: str = "alice-token", **extra) -> dict:
    body = {"resource_id": RESOURCE_ID, "filename": "big.bin", "content_type": "application/octet-stream"}
    body.update(size=size, **extra)
    if multipart is not None:
        body["multipart"] = multipart
    response = call(client, "post", "/api/v1/uploads", body, token=token)
    assert response.status_code == 201, response.content
    return response.json()


def put_part(part: dict, data: bytes) -> str:
    response = requests.put(part["url"], data=data, headers=part["headers"], timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["ETag"].strip('"')


def chunks(size: int, part_size: int, seed: bytes = b"x") -> list[bytes]:
    data = (seed * (size // len(seed) + 1))[:size]
    return [data[i : i + part_size] for i in range(0, size, part_size)]


@pytest.mark.django_db
def test_a_multipart_upload_is_planned_signed_per_part_and_recorded(client, storage_world, fake_ckan):
    issued = issue(client, size=12 * MIB)
    assert (issued["method"], issued["multipart"], issued["upload_url"]) == ("MULTIPART", True, None)
    assert (issued["part_size"], issued["part_count"]) == (5 * MIB, 3)
    assert [p["part_number"] for p in issued["parts"]] == [1, 2, 3]
    assert [p["headers"]["Content-Length"] for p in issued["parts"]] == [str(5 * MIB), str(5 * MIB), str(2 * MIB)]
    query = parse_qs(urlparse(issued["parts"][2]["url"]).query)
    assert query["partNumber"] == ["3"]
    assert "content-length" in query["X-Amz-SignedHeaders"][0]
    assert issued["parts_url"].endswith(f"/api/v1/uploads/{issued['upload_id']}/parts")
    upload = Upload.objects.get(pk=issued["upload_id"])
    assert (upload.part_size, upload.part_count, upload.state) == (5 * MIB, 3, UploadState.ISSUED)
    assert upload.expires_at - upload.issued_at == timedelta(days=7)
    [listed] = storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket)["Uploads"]
    assert (listed["Key"], listed["UploadId"]) == (upload.key, upload.multipart_upload_id)


@pytest.mark.django_db
def test_the_first_answer_carries_a_page_of_part_urls_and_the_rest_come_on_request(client, storage_world, fake_ckan):
    with override_settings(MULTIPART_URLS_PER_PAGE=2):
        issued = issue(client, size=12 * MIB)
    assert [p["part_number"] for p in issued["parts"]] == [1, 2]
    more = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/parts", {"part_numbers": [3, 1]})
    assert more.status_code == 200, more.content
    assert [(p["part_number"], p["headers"]["Content-Length"]) for p in more.json()["parts"]] == [
        (1, str(5 * MIB)),
        (3, str(2 * MIB)),
    ]
    out_of_plan = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/parts", {"part_numbers": [4]})
    assert out_of_plan.status_code == 400
    assert "part_numbers" in out_of_plan.json()["error"]["fields"]


@pytest.mark.django_db
def test_parts_listed_complete_and_link_end_to_end(
    client, storage_world, fake_ckan, enqueued, django_capture_on_commit_callbacks
):
    issued = issue(client, size=12 * MIB)
    data = chunks(12 * MIB, 5 * MIB, b"0123456789abcdef")
    etags = [put_part(part, chunk) for part, chunk in zip(issued["parts"], data, strict=True)]
    listed = call(client, "get", f"/api/v1/uploads/{issued['upload_id']}/parts")
    assert listed.status_code == 200
    assert listed.json()["parts"] == [
        {"part_number": n, "size": len(chunk), "etag": etag}
        for n, (chunk, etag) in enumerate(zip(data, etags, strict=True), start=1)
    ]
    sent = [{"part_number": n, "etag": etag} for n, etag in enumerate(etags, start=1)]
    with django_capture_on_commit_callbacks(execute=True):
        done = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete", {"parts": sent})
    assert done.status_code == 202, done.content
    assert done.json()["state"] == "uploaded"
    body = storage_world.s3.get_object(Bucket=storage_world.bucket, Key=issued["key"])["Body"].read()
    assert body == b"".join(data)
    assert not storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket).get("Uploads")
    upload = Upload.objects.get(pk=issued["upload_id"])
    assert (upload.state, upload.object_size) == (UploadState.UPLOADED, 12 * MIB)
    assert upload.object_etag.endswith("-3")
    assert enqueued == [(issued["upload_id"], LinkTrigger.COMPLETE)]


@pytest.mark.django_db
def test_complete_refuses_missing_parts_and_changes_nothing(
    client, storage_world, fake_ckan, enqueued, django_capture_on_commit_callbacks
):
    issued = issue(client, size=12 * MIB)
    put_part(issued["parts"][0], chunks(5 * MIB, 5 * MIB)[0])
    with django_capture_on_commit_callbacks(execute=True):
        response = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete")
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["missing"], error["missing_count"]) == ("parts_missing", [2, 3], 2)
    upload = Upload.objects.get(pk=issued["upload_id"])
    assert upload.state == UploadState.ISSUED
    assert not StorageEvent.objects.exists()
    assert enqueued == []


@pytest.mark.django_db
def test_complete_refuses_etags_that_are_not_the_buckets_and_says_which(client, storage_world, fake_ckan):
    issued = issue(client, size=7 * MIB)
    first, second = chunks(7 * MIB, 5 * MIB)
    etags = [put_part(issued["parts"][0], first), put_part(issued["parts"][1], second)]
    claimed = [{"part_number": 1, "etag": etags[0]}, {"part_number": 2, "etag": "0" * 32}]
    response = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete", {"parts": claimed})
    assert response.status_code == 409
    assert (response.json()["error"]["code"], response.json()["error"]["parts"]) == ("part_mismatch", [2])
    assert Upload.objects.get(pk=issued["upload_id"]).state == UploadState.ISSUED


@pytest.mark.django_db
def test_complete_refuses_a_part_of_the_wrong_size(client, storage_world, fake_ckan):
    issued = issue(client, size=12 * MIB)
    upload = Upload.objects.get(pk=issued["upload_id"])
    # A client that ignores the signed Content-Length (moto does not enforce it; R2 and S3 do).
    for number, size in ((1, 5 * MIB), (2, 6 * MIB), (3, 1 * MIB)):
        storage_world.s3.upload_part(
            Bucket=storage_world.bucket,
            Key=upload.key,
            UploadId=upload.multipart_upload_id,
            PartNumber=number,
            Body=b"y" * size,
        )
    response = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete")
    assert response.status_code == 409
    assert (response.json()["error"]["code"], response.json()["error"]["parts"]) == ("part_size_mismatch", [2, 3])


@pytest.mark.django_db
def test_complete_of_a_single_put_before_the_put_is_409_and_changes_nothing(
    client, storage_world, fake_ckan, enqueued, django_capture_on_commit_callbacks
):
    issued = issue(client, size=8, multipart=None)
    with django_capture_on_commit_callbacks(execute=True):
        response = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_uploaded"
    upload = Upload.objects.get(pk=issued["upload_id"])
    assert (upload.state, upload.object_seen_at) == (UploadState.ISSUED, None)
    assert not StorageEvent.objects.exists()
    assert enqueued == []


@pytest.mark.django_db
def test_complete_of_a_single_put_after_the_put_links_now_and_a_repeat_is_harmless(
    client, storage_world, fake_ckan, enqueued, django_capture_on_commit_callbacks
):
    issued = issue(client, size=8, multipart=None)
    requests.put(issued["upload_url"], data=b"12345678", headers=issued["headers"], timeout=10).raise_for_status()
    with django_capture_on_commit_callbacks(execute=True):
        first = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete")
    with django_capture_on_commit_callbacks(execute=True):
        again = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["state"] == again.json()["state"] == "uploaded"
    assert enqueued == [(issued["upload_id"], LinkTrigger.COMPLETE)]
    assert StorageEvent.objects.get().deliveries == 2


@pytest.mark.django_db
def test_abort_deletes_the_parts_and_leaves_no_object(client, storage_world, fake_ckan):
    issued = issue(client, size=7 * MIB)
    put_part(issued["parts"][0], chunks(5 * MIB, 5 * MIB)[0])
    response = call(client, "delete", f"/api/v1/uploads/{issued['upload_id']}")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "aborted"
    assert not storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket).get("Uploads")
    assert not storage_world.s3.list_objects_v2(Bucket=storage_world.bucket).get("Contents")
    assert Upload.objects.get(pk=issued["upload_id"]).state == UploadState.ABORTED
    # Aborting twice is fine; an aborted upload takes no more parts and cannot complete.
    assert call(client, "delete", f"/api/v1/uploads/{issued['upload_id']}").status_code == 200
    refused = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/parts", {"part_numbers": [1]})
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "aborted")
    refused = call(client, "post", f"/api/v1/uploads/{issued['upload_id']}/complete")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "aborted")


@pytest.mark.django_db
def test_abort_after_the_put_is_refused_since_the_file_is_there(client, storage_world, fake_ckan):
    issued = issue(client, size=8, multipart=None)
    requests.put(issued["upload_url"], data=b"12345678", headers=issued["headers"], timeout=10).raise_for_status()
    response = call(client, "delete", f"/api/v1/uploads/{issued['upload_id']}")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "already_uploaded")
    assert Upload.objects.get(pk=issued["upload_id"]).state == UploadState.ISSUED


@pytest.mark.django_db
def test_the_sweep_aborts_an_abandoned_multipart_upload(client, storage_world, fake_ckan):
    issued = issue(client, size=7 * MIB)
    put_part(issued["parts"][0], chunks(5 * MIB, 5 * MIB)[0])
    Upload.objects.filter(pk=issued["upload_id"]).update(expires_at=timezone.now() - timedelta(days=1))
    counts = sweep.run_sweep()
    assert counts["expired"] == 1
    assert Upload.objects.get(pk=issued["upload_id"]).state == UploadState.EXPIRED
    assert not storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket).get("Uploads")


# (method, path suffix, body, what the owner gets on a fresh upload with no parts sent)
OWNER_ONLY = [
    ("post", "/parts", {"part_numbers": [1]}, 200),
    ("get", "/parts", None, 200),
    ("post", "/complete", None, 409),  # parts_missing
    ("delete", "", None, 200),
]


@pytest.mark.parametrize(("method", "suffix", "body", "owner_status"), OWNER_ONLY)
@pytest.mark.django_db
def test_only_the_requesters_token_may_act_on_an_upload(
    client, storage_world, fake_ckan, method, suffix, body, owner_status
):
    issued = issue(client, size=7 * MIB)
    path = f"/api/v1/uploads/{issued['upload_id']}{suffix}"
    anonymous = call(client, method, path, body, token=None)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthenticated")
    other = call(client, method, path, body, token="bob-token")
    assert (other.status_code, other.json()["error"]["code"]) == (403, "not_owner")
    unknown_token = call(client, method, path, body, token="not-a-ckan-token")
    assert unknown_token.status_code == 403
    assert Upload.objects.get(pk=issued["upload_id"]).state == UploadState.ISSUED
    # The same CKAN user with another of their tokens is the owner.
    assert call(client, method, path, body, token="alice-other-token").status_code == owner_status


@pytest.mark.django_db
def test_an_unknown_upload_is_404_for_every_owner_endpoint(client, storage_world, fake_ckan):
    for method, suffix, body, _ in OWNER_ONLY:
        response = call(client, method, f"/api/v1/uploads/{uuid.uuid4()}{suffix}", body)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


@pytest.mark.django_db
def test_the_status_shows_only_the_state_without_the_owners_token(client, storage_world, fake_ckan):
    issued = issue(client, size=7 * MIB)
    path = f"/api/v1/uploads/{issued['upload_id']}"
    assert call(client, "get", path, token=None).json() == {"upload_id": issued["upload_id"], "state": "issued"}
    assert call(client, "get", path, token="bob-token").status_code == 403
    full = call(client, "get", path, token="alice-token").json()
    assert (full["resource_id"], full["part_size"], full["part_count"], full["multipart"]) == (
        RESOURCE_ID,
        5 * MIB,
        2,
        True,
    )


@pytest.mark.django_db
def test_a_steward_session_sees_the_status_details(client, storage_world, fake_ckan):
    issued = issue(client, size=7 * MIB)
    steward = User.objects.create_user("steward", password="pw", is_staff=True)
    steward.user_permissions.add(Permission.objects.get(codename="view_upload"))
    plain = User.objects.create_user("plain", password="pw")
    client.force_login(plain)
    assert "resource_id" not in call(client, "get", f"/api/v1/uploads/{issued['upload_id']}", token=None).json()
    client.force_login(steward)
    details = call(client, "get", f"/api/v1/uploads/{issued['upload_id']}", token=None).json()
    assert details["resource_id"] == RESOURCE_ID


@pytest.mark.django_db
def test_an_impossible_size_is_a_400_naming_the_field_and_creates_nothing(client, storage_world, fake_ckan):
    body = {"resource_id": RESOURCE_ID, "filename": "a.bin", "content_type": "application/octet-stream"}
    for extra in ({"size": 5 * 1024**4 + 1}, {"size": 6 * 1024**3, "multipart": False}, {"multipart": True}):
        response = call(client, "post", "/api/v1/uploads", {**body, **extra})
        assert response.status_code == 400, response.content
        assert "size" in response.json()["error"]["fields"]
    assert not Upload.objects.exists()
    assert not storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket).get("Uploads")


@pytest.mark.django_db
def test_complete_takes_no_body_or_a_json_one_and_refuses_anything_else_with_a_400(client, storage_world, fake_ckan):
    issued = issue(client, size=8, multipart=None)
    path = f"/api/v1/uploads/{issued['upload_id']}/complete"
    bare = client.post(path, HTTP_AUTHORIZATION="alice-token")
    assert (bare.status_code, bare.json()["error"]["code"]) == (409, "not_uploaded")
    for junk in ("{not json", '{"parts": [{"part_number": 0, "etag": "x"}]}', '{"parts": "all"}'):
        response = client.post(path, data=junk, content_type="application/json", HTTP_AUTHORIZATION="alice-token")
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid"), junk


@pytest.mark.django_db
def test_creating_a_resource_with_a_large_file_starts_a_multipart_upload(client, storage_world, fake_ckan):
    body = {
        "package_id": PACKAGE_ID,
        "name": "big",
        "filename": "big.bin",
        "content_type": "application/octet-stream",
        "size": 101 * MIB,
    }
    with override_settings(MULTIPART_PART_SIZE=64 * MIB):
        response = call(client, "post", "/api/v1/resources", body)
    assert response.status_code == 201, response.content
    upload = response.json()["upload"]
    assert (upload["method"], upload["part_count"], upload["part_size"]) == ("MULTIPART", 2, 64 * MIB)
    too_big = call(client, "post", "/api/v1/resources", {**body, "size": 6 * 1024**3, "multipart": False})
    assert too_big.status_code == 400
    created = [c for c in fake_ckan.calls if c.request.url.endswith("/resource_create")]
    assert len(created) == 1  # the refused one created nothing in CKAN
