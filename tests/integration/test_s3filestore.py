"""LINK_STYLE=s3filestore against a real CKAN running ckanext-s3filestore on moto (over HTTP).

A file uploaded through this service must download through CKAN's own download route exactly
like a file uploaded through CKAN's form, for a public and for a private dataset; a private
dataset's file gives an anonymous reader no bytes, neither through CKAN nor from the bucket.
The CKAN is the second local instance (`local_ckan.py up --s3filestore`, .ckan/s3filestore),
started here, so the default CKAN the other tests use keeps running without the plugin.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from tests.support.ckan_site import CkanUnavailable, ensure_s3filestore_ckan, make_world
from tests.support.moto import ACCESS_KEY, SECRET_KEY
from uploads.models import Upload
from uploads.services import ingest, issue, link, reconcile

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

BUCKET = "ckan-s3filestore"
CSV = b"station,temp\nA,12.5\nB,13.0\n"
FILENAME = "Station Report (Final).csv"
MUNGED = "station-report-final.csv"


@pytest.fixture
def s3filestore_site(moto_server):
    s3 = moto_server.client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    try:
        site, config = ensure_s3filestore_ckan(
            moto_server.endpoint, BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY
        )
    except CkanUnavailable as exc:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(f"a real CKAN is required here but could not start: {exc}")
        pytest.skip(f"real CKAN unavailable: {exc}")
    settings = {
        "STORAGE_ENDPOINT_URL": moto_server.endpoint,
        "STORAGE_REGION": "us-east-1",
        "STORAGE_BUCKET": BUCKET,
        "STORAGE_ACCESS_KEY_ID": ACCESS_KEY,
        "STORAGE_SECRET_ACCESS_KEY": SECRET_KEY,
        "STORAGE_PUBLIC_BASE_URL": f"{moto_server.endpoint}/{BUCKET}",
        "STORAGE_OBJECT_ACLS": True,
        "LINK_STYLE": "s3filestore",
        "S3FILESTORE_STORAGE_PATH": config["storage_path"],
        "CKAN_URL": site.url,
        "CKAN_API_TOKEN": site.sysadmin_token,
    }
    with override_settings(**settings):
        yield site, config, s3


def upload_through_the_service(world, filename: str = FILENAME) -> Upload:
    issued = issue.issue_upload(
        resource_id=world.resource["id"],
        filename=filename,
        content_type="text/csv",
        size=len(CSV),
        sha256="",
        client_token=world.editor.token,
        client_address=None,
    )
    assert requests.put(issued.url, data=CSV, headers=issued.headers, timeout=10).status_code == 200
    ingest.mark_object_seen(issued.upload, size=len(CSV), etag="", seen_at=timezone.now(), trigger="event")
    outcome = link.link_upload(upload_id=issued.upload.id, trigger="event")
    upload = Upload.objects.get(pk=issued.upload.pk)
    assert outcome == "linked", upload.last_error
    return upload


def upload_through_ckans_form(site, world) -> dict:
    """What CKAN's own resource form does: resource_create with the file in `upload` (multipart)."""
    response = requests.post(
        f"{site.url}/api/3/action/resource_create",
        data={"package_id": world.dataset["id"], "name": "Uploaded in CKAN"},
        files={"upload": (FILENAME, CSV, "text/csv")},
        headers={"Authorization": world.editor.token},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["result"]


def download(url: str, token: str | None) -> tuple[requests.Response, requests.Response | None]:
    """CKAN's download route without following, then the redirect's target (no token sent there)."""
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": token} if token else {}
    first = session.get(url, headers=headers, allow_redirects=False, timeout=30)
    if first.status_code not in (301, 302, 303, 307):
        return first, None
    return first, session.get(first.headers["Location"], timeout=30)


@pytest.mark.parametrize("private", [False, True], ids=["public-dataset", "private-dataset"])
def test_a_file_from_the_service_downloads_through_ckan_like_one_from_ckans_form(
    s3filestore_site, moto_server, private
):
    site, config, s3 = s3filestore_site
    world = make_world(site, "s3fs", private=private)
    ours = upload_through_the_service(world)
    own = upload_through_ckans_form(site, world)

    # The extension's layout and links.
    assert ours.key == f"{config['storage_path']}/resources/{world.resource['id']}/{MUNGED}"
    ours_res = site.resource_show(world.resource["id"])
    own_res = site.resource_show(own["id"])
    assert s3.head_object(Bucket=BUCKET, Key=f"{config['storage_path']}/resources/{own['id']}/{MUNGED}")
    for res in (ours_res, own_res):
        assert res["url_type"] == "upload"
        assert res["url"] == f"{site.url}/dataset/{world.dataset['id']}/resource/{res['id']}/download/{MUNGED}"
    assert ours.linked_url == ours_res["url"]
    assert ours_res["size"] == own_res["size"] == len(CSV)
    assert ours_res["mimetype"] == own_res["mimetype"] == "text/csv"

    # The dataset's editor downloads both the same way: CKAN redirects to the bucket.
    answers = {}
    for name, res in (("ours", ours_res), ("own", own_res)):
        first, final = download(res["url"], world.editor.token)
        assert first.status_code == 302, (name, first.status_code, first.text[:300])
        assert urlsplit(first.headers["Location"]).netloc == urlsplit(moto_server.endpoint).netloc
        assert final is not None and final.status_code == 200, (name, final and final.text[:300])
        assert final.content == CSV
        signed = "Signature=" in first.headers["Location"] or "X-Amz-Signature=" in first.headers["Location"]
        answers[name] = (
            signed,
            final.headers.get("Content-Type"),
            final.headers.get("Content-Disposition"),
        )
    assert answers["ours"] == answers["own"]
    assert answers["ours"][0] is private  # a private file only through a signed URL

    # Anonymous: the public dataset's file like CKAN's own; the private one's not at all.
    for res in (ours_res, own_res):
        first, final = download(res["url"], None)
        if private:
            assert first.status_code in (401, 403, 404), first.status_code
            assert CSV not in first.content
        else:
            assert first.status_code == 302 and final is not None and final.content == CSV
    unsigned = requests.get(f"{moto_server.endpoint}/{BUCKET}/{ours.key}", timeout=10)
    assert (unsigned.status_code, unsigned.content == CSV) == ((403, False) if private else (200, True))


def test_a_second_upload_of_the_same_name_gets_its_own_key_and_the_link(s3filestore_site):
    site, config, _s3 = s3filestore_site
    world = make_world(site, "s3fs2")
    first = upload_through_the_service(world)
    second = upload_through_the_service(world)
    assert first.key != second.key
    assert second.key.startswith(f"{config['storage_path']}/resources/{world.resource['id']}/station-report-final-")
    first.refresh_from_db()
    assert (first.state, second.state) == ("superseded", "linked")
    res = site.resource_show(world.resource["id"])
    assert res["url"].rsplit("/", 1)[-1] == second.key.rsplit("/", 1)[-1]
    got, final = download(res["url"], world.editor.token)
    assert got.status_code == 302 and final is not None and final.content == CSV


def test_reconcile_leaves_ckans_own_files_alone_and_finds_no_drift(s3filestore_site):
    site, config, s3 = s3filestore_site
    world = make_world(site, "s3fs3")
    upload_through_the_service(world)
    own = upload_through_ckans_form(site, world)
    own_key = f"{config['storage_path']}/resources/{own['id']}/{MUNGED}"
    run = reconcile.run_reconcile(fix=True, delete_orphans_older_than_days=0)
    assert s3.head_object(Bucket=BUCKET, Key=own_key)  # never taken for an orphan
    from uploads.models import Discrepancy

    assert list(Discrepancy.objects.values_list("kind", "key")) == []
    assert run.counts["ckan_own_objects"] >= 1


# --- LINK_STYLE=ckan_files: CKAN 2.12's file registry, on the same CKAN and bucket ------------


@pytest.fixture
def ckan_files_site(s3filestore_site):
    site, config, s3 = s3filestore_site
    storage_conf = config["files_storage"]
    with override_settings(
        LINK_STYLE="ckan_files", CKAN_FILES_STORAGE=storage_conf["name"], CKAN_FILES_STORAGE_PATH=storage_conf["path"]
    ):
        yield site, storage_conf, s3


@pytest.mark.parametrize("private", [False, True], ids=["public-dataset", "private-dataset"])
def test_ckan_files_registers_the_object_owned_by_its_resource_and_ckan_serves_it(
    ckan_files_site, moto_server, private
):
    site, storage_conf, _s3 = ckan_files_site
    world = make_world(site, "ckfiles", private=private)
    ours = upload_through_the_service(world)

    assert ours.key.startswith(f"{storage_conf['path']}/{world.resource['id']}/{ours.id}/")
    res = site.resource_show(world.resource["id"])
    assert res["url"].startswith(f"{site.url}/file/download/")
    assert ours.linked_url == res["url"]
    file_id = res["url"].rsplit("/", 1)[-1]
    registered = site.action("file_show", id=file_id)
    assert registered["storage"] == storage_conf["name"]
    assert registered["location"] == ours.key[len(storage_conf["path"]) + 1 :]
    assert (registered["owner_type"], registered["owner_id"]) == ("resource", world.resource["id"])
    assert registered["size"] == len(CSV)
    assert registered["content_type"] == "text/csv"
    assert registered["hash"] == hashlib.md5(CSV).hexdigest()  # noqa: S324 (what CKAN's registry records)

    got, _ = download(res["url"], world.editor.token)
    assert got.status_code == 200 and got.content == CSV
    anonymous, _ = download(res["url"], None)
    if private:
        assert anonymous.status_code == 404 and CSV not in anonymous.content
    else:
        assert anonymous.status_code == 200 and anonymous.content == CSV
    # Stored private either way: CKAN reads the object, no one needs the bucket's URL.
    assert requests.get(f"{moto_server.endpoint}/{BUCKET}/{ours.key}", timeout=10).status_code == 403


def test_ckan_files_access_follows_the_dataset_made_private_after_linking(ckan_files_site):
    site, _conf, _s3 = ckan_files_site
    world = make_world(site, "ckfiles2")
    ours = upload_through_the_service(world)
    url = site.resource_show(world.resource["id"])["url"]
    assert download(url, None)[0].status_code == 200
    site.action("package_patch", id=world.dataset["id"], private=True)
    anonymous, _ = download(url, None)
    assert anonymous.status_code == 404 and CSV not in anonymous.content
    assert download(url, world.editor.token)[0].content == CSV
    run = reconcile.run_reconcile(fix=True)
    from uploads.models import Discrepancy

    # Nothing to repair for this file (other tests' objects, whose ledger rows are gone, are orphans).
    assert list(Discrepancy.objects.filter(key=ours.key).values_list("kind", flat=True)) == []
    assert not Discrepancy.objects.filter(kind="exposure").exists()
    assert run.state == "finished", run.error if hasattr(run, "error") else run.state


def test_ckan_files_a_relink_finds_the_registered_file_again(ckan_files_site):
    site, _conf, _s3 = ckan_files_site
    world = make_world(site, "ckfiles3")
    ours = upload_through_the_service(world)
    url = site.resource_show(world.resource["id"])["url"]
    assert link.link_upload(upload_id=ours.id, trigger="replay", force=True) == "linked"
    assert site.resource_show(world.resource["id"])["url"] == url


def test_a_multipart_upload_through_the_api_for_a_private_dataset_lands_and_serves_like_the_rest(
    client, s3filestore_site, moto_server
):
    site, config, _s3 = s3filestore_site
    world = make_world(site, "s3fsmp", private=True)
    mib = 1024**2
    data = (b"station,temp\n" * (6 * mib // 13 + 1))[: 6 * mib + 77]
    body = {"resource_id": world.resource["id"], "filename": "Big File.csv", "content_type": "text/csv"}
    with override_settings(MULTIPART_PART_SIZE=5 * mib):
        answer = client.post(
            "/api/v1/uploads",
            data=json.dumps({**body, "size": len(data), "multipart": True}),
            content_type="application/json",
            HTTP_AUTHORIZATION=world.editor.token,
        )
    assert answer.status_code == 201, answer.content  # a private dataset: no 409 in this style
    issued = answer.json()
    assert issued["key"] == f"{config['storage_path']}/resources/{world.resource['id']}/big-file.csv"
    parts = []
    for part in issued["parts"]:
        start = (part["part_number"] - 1) * issued["part_size"]
        put = requests.put(part["url"], data=data[start : start + issued["part_size"]], headers=part["headers"])
        assert put.status_code == 200, put.text
        parts.append({"part_number": part["part_number"], "etag": put.headers["ETag"]})
    done = client.post(
        issued["complete_url"],
        data=json.dumps({"parts": parts}),
        content_type="application/json",
        HTTP_AUTHORIZATION=world.editor.token,
    )
    assert done.status_code == 202, done.content
    assert link.link_upload(upload_id=uuid.UUID(issued["upload_id"]), trigger="complete") == "linked"
    res = site.resource_show(world.resource["id"])
    assert res["url_type"] == "upload" and res["url"].endswith("/download/big-file.csv")
    first, final = download(res["url"], world.editor.token)
    assert first.status_code == 302 and final is not None and final.content == data
    assert download(res["url"], None)[0].status_code in (401, 403, 404)
    assert requests.get(f"{moto_server.endpoint}/{BUCKET}/{issued['key']}", timeout=10).status_code == 403
