"""The ckan-upload client against the real service (live server), moto over HTTP, a real CKAN and qcluster."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.test import override_settings

from ckan_upload.slices import Part, plan_parts
from tests.support.pipeline import qcluster, world_environ
from tests.support.processes import wait_for
from uploads.models import Upload

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
# moto refuses parts under 5 MiB but the last: 3 full parts and a short one.
DATA_SIZE = 3 * 5 * MiB + MiB


@pytest.fixture(autouse=True)
def small_parts():
    """Parts of moto's minimum, so a 16 MiB file has several (the default part is 64 MiB)."""
    with override_settings(MULTIPART_PART_SIZE=5 * MiB):
        yield


@pytest.fixture
def big_file(tmp_path) -> tuple[Path, bytes]:
    data = os.urandom(DATA_SIZE)
    path = tmp_path / "measurements.bin"
    path.write_bytes(data)
    return path, data


def client_environ(live_server, token: str, cache: Path) -> dict[str, str]:
    """The client's environment: the service and the user's token, a private resume cache, no proxies."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(("CKAN_", "STORAGE_"))}
    env.update(CKAN_UPLOAD_SERVER=live_server.url, CKAN_API_TOKEN=token, XDG_CACHE_HOME=str(cache))
    return env


def ckan_upload(*args: str) -> list[str]:
    return [sys.executable, "-m", "ckan_upload", *args]


def held_parts(storage_world, key: str) -> dict[int, int]:
    """The parts moto holds for the one multipart upload of ``key``: number -> size."""
    uploads = storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket).get("Uploads", [])
    found = [u for u in uploads if u["Key"] == key]
    if not found:
        return {}
    listed = storage_world.s3.list_parts(Bucket=storage_world.bucket, Key=key, UploadId=found[0]["UploadId"])
    return {part["PartNumber"]: part["Size"] for part in listed.get("Parts", [])}


def planned_parts(upload: Upload) -> list[Part]:
    """The parts the service planned for the upload, as the client computes them."""
    assert upload.declared_size is not None and upload.part_size is not None and upload.part_count is not None
    return plan_parts(upload.declared_size, upload.part_size, upload.part_count)


def assert_linked_and_identical(storage_world, ckan_world, result: dict, data: bytes) -> None:
    """CKAN points at the object with its size, and the object is the file, byte for byte."""
    assert result["state"] == "linked", result
    upload = Upload.objects.get(pk=result["upload_id"])
    resource = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert resource["url"] == result["linked_url"] == upload.linked_url
    assert int(resource["size"]) == len(data)
    stored = storage_world.s3.get_object(Bucket=storage_world.bucket, Key=upload.key)["Body"].read()
    assert stored == data
    assert storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket).get("Uploads", []) == []


def test_the_client_sends_a_file_in_parallel_parts_and_waits_for_its_link(
    live_server, storage_world, ckan_world, ckan_settings, big_file, tmp_path
):
    path, data = big_file
    env = client_environ(live_server, ckan_world.editor.token, tmp_path / "cache")
    command = ckan_upload(str(path), "--resource", ckan_world.resource["id"], "--multipart", "--jobs", "3")
    with qcluster(world_environ(storage_world, ckan_settings), tmp_path / "qcluster.log"):
        done = subprocess.run(
            [*command, "--wait", "--timeout", "60", "--json"], env=env, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    upload = Upload.objects.get(pk=result["upload_id"])
    assert (upload.part_size, upload.part_count) == (5 * MiB, 4)
    assert result["parts_sent"] == [1, 2, 3, 4]
    assert result["parts_skipped"] == [] and result["bytes_sent"] == len(data)
    assert_linked_and_identical(storage_world, ckan_world, result, data)
    assert not list((tmp_path / "cache").rglob("*.json")), "a finished upload leaves no resume file"


def test_a_killed_client_resumes_and_sends_only_the_missing_parts(
    live_server, storage_world, ckan_world, ckan_settings, big_file, tmp_path
):
    path, data = big_file
    env = client_environ(live_server, ckan_world.editor.token, tmp_path / "cache")
    # Slow and one part at a time, so the kill lands after some parts and before the last.
    command = ckan_upload(
        str(path), "--resource", ckan_world.resource["id"], "--multipart", "--jobs", "1", "--limit-rate", "2M"
    )
    command += ["--wait", "--timeout", "60", "--json"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        upload = wait_for(lambda: Upload.objects.first(), timeout=60, interval=0.05, what="the upload to be issued")
        wait_for(
            lambda: len(held_parts(storage_world, upload.key)) >= 2,
            timeout=60,
            interval=0.05,
            what="two parts in the bucket",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    upload.refresh_from_db()
    expected = {part.number: part.length for part in planned_parts(upload)}
    held = sorted(n for n, size in held_parts(storage_world, upload.key).items() if expected[n] == size)
    assert 2 <= len(held) < upload.part_count
    assert list((tmp_path / "cache").rglob("*.json")), "the killed run left its resume file"

    with qcluster(world_environ(storage_world, ckan_settings), tmp_path / "qcluster.log"):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["upload_id"] == str(upload.pk) and result["resumed"] is True
    assert result["parts_skipped"] == held
    assert result["parts_sent"] == [n for n in range(1, upload.part_count + 1) if n not in held]
    assert_linked_and_identical(storage_world, ckan_world, result, data)
    assert Upload.objects.count() == 1


def test_a_rerun_after_the_upload_was_aborted_starts_a_new_one(
    live_server, storage_world, ckan_world, ckan_settings, big_file, tmp_path
):
    path, data = big_file
    env = client_environ(live_server, ckan_world.editor.token, tmp_path / "cache")
    command = ckan_upload(
        str(path), "--resource", ckan_world.resource["id"], "--multipart", "--jobs", "1", "--limit-rate", "4M"
    )
    first = subprocess.Popen([*command, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        upload = wait_for(lambda: Upload.objects.first(), timeout=60, interval=0.05, what="the upload to be issued")
        wait_for(lambda: held_parts(storage_world, upload.key), timeout=60, interval=0.05, what="a part in the bucket")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    aborted = requests.delete(
        f"{live_server.url}/api/v1/uploads/{upload.pk}", headers={"Authorization": ckan_world.editor.token}, timeout=30
    )
    assert aborted.status_code == 200, aborted.text

    with qcluster(world_environ(storage_world, ckan_settings), tmp_path / "qcluster.log"):
        done = subprocess.run(
            [*command, "--wait", "--timeout", "60", "--json"], env=env, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["upload_id"] != str(upload.pk) and result["parts_skipped"] == []
    assert_linked_and_identical(storage_world, ckan_world, result, data)


def test_a_small_file_goes_in_one_put_with_its_sha256_declared(
    live_server, storage_world, ckan_world, ckan_settings, tmp_path
):
    data = b"station,temp\nA,12.5\nB,13.0\n"
    path = tmp_path / "temps.csv"
    path.write_bytes(data)
    env = client_environ(live_server, ckan_world.editor.token, tmp_path / "cache")
    command = ckan_upload(str(path), "--resource", ckan_world.resource["id"], "--wait", "--timeout", "60", "--json")
    with qcluster(world_environ(storage_world, ckan_settings), tmp_path / "qcluster.log"):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["parts_sent"] == [1] and result["bytes_sent"] == len(data)
    upload = Upload.objects.get(pk=result["upload_id"])
    assert not upload.is_multipart
    # What the store verified is the service's business (moto records it only in some cases).
    assert upload.declared_sha256 == hashlib.sha256(data).hexdigest()
    assert upload.content_type == "text/csv"
    assert_linked_and_identical(storage_world, ckan_world, result, data)
