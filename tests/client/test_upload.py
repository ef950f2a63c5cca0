"""The command against the fake service: single PUT, parallel parts, retries, URL refresh, resume, --wait."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ckan_upload.retry import Backoff
from ckan_upload.state import StateStore, Target, UploadState, state_key

DATA = os.urandom(5 * 1024 + 300)  # 6 parts of 1 KiB (the last 300 bytes) on the fake
SMALL = b"station,temp\nA,12.5\n"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    """Retries wait milliseconds, not seconds."""
    monkeypatch.setattr(Backoff, "delay", lambda self, attempt, rng=None: 0.01)


@pytest.fixture
def big(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(DATA)
    return path


def saved_state(fake, path, target: Target) -> StateStore | None:
    """The resume file the command keeps for ``path``, if any."""
    stat = path.stat()
    store = StateStore()
    key = state_key(server=fake.url, path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns, target=target)
    return store.load(key)


def test_a_small_file_goes_in_one_put_with_its_sha256_declared(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    code, out = run(str(path), "--resource", "r-1")
    assert code == 0, out
    upload = fake.only_upload()
    assert upload.object == SMALL
    [issued] = fake.issued
    assert issued == {
        "resource_id": "r-1",
        "filename": "temps.csv",
        "content_type": "text/csv",
        "size": len(SMALL),
        "sha256": hashlib.sha256(SMALL).hexdigest(),
    }
    assert out["upload_id"] == upload.id
    assert (out["state"], out["parts_sent"], out["parts_skipped"], out["bytes_sent"]) == (
        "uploaded",
        [1],
        [],
        len(SMALL),
    )
    assert saved_state(fake, path, Target(resource_id="r-1")) is None


def test_a_complete_answered_not_uploaded_is_asked_again(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    fake.not_uploaded_answers = 2
    code, out = run(str(path), "--resource", "r-1")
    assert code == 0, out
    assert len(fake.completes) == 3
    assert out["state"] == "uploaded"


def test_a_big_file_goes_in_parallel_parts_and_completes_with_their_etags(fake, run, big):
    code, out = run(str(big), "--resource", "r-1", "--jobs", "3", "--multipart")
    assert code == 0, out
    upload = fake.only_upload()
    assert upload.multipart and upload.object == DATA
    assert out["parts_sent"] == [1, 2, 3, 4, 5, 6] and out["parts_skipped"] == []
    assert out["bytes_sent"] == len(DATA)
    assert set(out["phases"]) == {"start", "send", "complete"}
    assert 0 < sum(out["phases"].values()) <= out["seconds"] + 0.01  # each rounded to the millisecond
    [sent] = fake.completes
    assert sent == {"parts": [{"part_number": n, "etag": upload.parts[n][1]} for n in range(1, 7)]}
    # No hash by default for a multipart upload: it would be a second full read of a big file.
    assert "sha256" not in fake.issued[0]


def test_sha256_is_declared_for_multipart_when_asked(fake, run, big):
    code, _ = run(str(big), "--resource", "r-1", "--sha256")
    assert code == 0
    assert fake.issued[0]["sha256"] == hashlib.sha256(DATA).hexdigest()


def test_multipart_can_be_forced_for_a_small_file(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    code, out = run(str(path), "--resource", "r-1", "--multipart")
    assert code == 0, out
    assert fake.issued[0]["multipart"] is True and "sha256" not in fake.issued[0]
    assert fake.only_upload().object == SMALL


def test_part_urls_beyond_the_first_page_are_fetched(fake, run, big):
    fake.first_page = 2
    code, out = run(str(big), "--resource", "r-1", "--jobs", "2")
    assert code == 0, out
    assert fake.calls["POST /api/v1/uploads/<id>/parts"] >= 1
    assert fake.only_upload().object == DATA


def test_a_part_that_fails_is_retried_with_backoff(fake, run, big):
    fake.put_faults = {3: [500, 503]}
    code, out = run(str(big), "--resource", "r-1")
    assert code == 0, out
    assert fake.part_puts[3] == 3
    assert fake.only_upload().object == DATA


def test_an_expired_part_url_is_replaced_by_a_fresh_one(fake, run, big):
    fake.refused_generation = set(range(1, 7))  # every URL of the first page
    code, out = run(str(big), "--resource", "r-1", "--jobs", "2")
    assert code == 0, out
    assert fake.calls["POST /api/v1/uploads/<id>/parts"] == 6
    assert fake.only_upload().object == DATA


def test_a_part_that_keeps_failing_stops_the_upload_and_keeps_the_state(fake, run, big):
    fake.put_faults = {2: [500] * 20}
    code, out = run(str(big), "--resource", "r-1")
    assert code == 4
    assert "part 2" in out["error"]["message"]
    state = saved_state(fake, big, Target(resource_id="r-1"))
    assert state is not None and state.upload_id == fake.only_upload().id
    assert fake.completes == []


def test_a_part_the_store_refuses_is_not_retried(fake, run, big):
    fake.put_faults = {2: [400]}
    code, _ = run(str(big), "--resource", "r-1")
    assert code == 4
    assert fake.part_puts[2] == 1


def test_a_rerun_sends_only_the_parts_the_bucket_does_not_hold(fake, run, big):
    fake.put_faults = {4: [500] * 20}
    code, _ = run(str(big), "--resource", "r-1", "--jobs", "1")
    assert code == 4
    upload = fake.only_upload()
    held_before = sorted(upload.parts)
    assert 4 not in held_before and held_before

    fake.put_faults = {}
    fake.part_puts.clear()
    code, out = run(str(big), "--resource", "r-1")
    assert code == 0, out
    assert out["upload_id"] == upload.id and out["resumed"] is True
    assert out["parts_skipped"] == held_before
    assert out["parts_sent"] == sorted(set(range(1, 7)) - set(held_before))
    assert set(fake.part_puts) == set(out["parts_sent"])
    assert upload.object == DATA
    assert len(fake.uploads) == 1


def test_a_held_part_of_the_wrong_size_is_sent_again(fake, run, big):
    fake.put_faults = {6: [500] * 20}
    run(str(big), "--resource", "r-1", "--jobs", "1")
    upload = fake.only_upload()
    upload.parts[2] = (b"short", '"x"')
    fake.put_faults = {}
    code, out = run(str(big), "--resource", "r-1")
    assert code == 0, out
    assert 2 in out["parts_sent"] and 2 not in out["parts_skipped"]
    assert upload.object == DATA


def test_a_rerun_after_the_upload_expired_starts_a_new_one_for_the_same_new_resource(fake, run, big):
    fake.put_faults = {2: [500] * 20}
    code, _ = run(str(big), "--dataset", "d-1", "--name", "Big")
    assert code == 4
    [first] = fake.uploads.values()
    first.state = "expired"
    fake.put_faults = {}
    code, out = run(str(big), "--dataset", "d-1", "--name", "Big")
    assert code == 0, out
    assert out["upload_id"] != first.id and out["parts_skipped"] == []
    # The resource was created by the first run: the second issues an upload for it, not a new resource.
    assert len(fake.resources_created) == 1
    assert fake.issued[1]["resource_id"] == fake.resources_created[0]["id"]
    assert fake.uploads[out["upload_id"]].object == DATA


def test_a_rerun_after_the_store_dropped_the_multipart_upload_starts_a_new_one(fake, run, big):
    fake.put_faults = {2: [500] * 20}
    run(str(big), "--resource", "r-1")
    [first] = fake.uploads.values()
    fake.gone.add(first.id)
    fake.put_faults = {}
    code, out = run(str(big), "--resource", "r-1")
    assert code == 0, out
    assert out["upload_id"] != first.id and out["parts_skipped"] == []
    assert fake.uploads[out["upload_id"]].object == DATA


def test_a_rerun_after_the_upload_was_forgotten_starts_a_new_one(fake, run, big):
    fake.put_faults = {2: [500] * 20}
    run(str(big), "--resource", "r-1")
    fake.uploads.clear()
    fake.put_faults = {}
    code, out = run(str(big), "--resource", "r-1")
    assert code == 0, out
    assert fake.only_upload().object == DATA


def test_a_rerun_of_a_single_put_that_landed_before_the_crash_only_completes(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    fake.not_uploaded_answers = 100
    code, _ = run(str(path), "--resource", "r-1")
    assert code == 3  # not_uploaded, again and again: the client gives up, the state stays
    upload = fake.only_upload()
    assert upload.object == SMALL
    fake.not_uploaded_answers = 0
    fake.part_puts.clear()
    code, out = run(str(path), "--resource", "r-1")
    assert code == 0, out
    assert out["upload_id"] == upload.id and out["parts_sent"] == [] and fake.part_puts == {}


def test_a_rerun_of_a_single_put_that_never_landed_aborts_it_and_starts_again(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    fake.put_faults = {1: [500] * 20}
    code, _ = run(str(path), "--resource", "r-1")
    assert code == 4
    [first] = fake.uploads.values()
    fake.put_faults = {}
    code, out = run(str(path), "--resource", "r-1")
    assert code == 0, out
    assert first.state == "aborted"
    assert out["upload_id"] != first.id and fake.uploads[out["upload_id"]].object == SMALL


def test_a_complete_that_finds_a_part_missing_sends_it_again(fake, run, big):
    fake.drop_part_after_put = 5
    code, out = run(str(big), "--resource", "r-1")
    assert code == 0, out
    assert fake.part_puts[5] == 2
    assert len(fake.completes) == 2
    assert fake.only_upload().object == DATA


def test_wait_prints_the_ckan_url_once_linked(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    code, out = run(str(path), "--resource", "r-1", "--wait", as_json=False)
    assert code == 0
    assert out.strip() == f"{fake.url}/files/{fake.only_upload().id}"


def test_wait_reports_a_failed_link_with_its_reason_and_exit_code_5(fake, run, tmp_path, capsys):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    fake.link_outcome = "failed"
    code, out = run(str(path), "--resource", "r-1", "--wait")
    assert code == 5
    assert (out["state"], out["last_error"]) == ("failed", "CKAN said no")
    assert saved_state(fake, path, Target(resource_id="r-1")) is None


def test_wait_gives_up_after_the_timeout_with_exit_code_7_and_keeps_the_state(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    fake.link_outcome = "uploaded"  # never linked
    code, out = run(str(path), "--resource", "r-1", "--wait", "--timeout", "0.3")
    assert code == 7
    assert out["error"]["code"] == "timeout"
    assert saved_state(fake, path, Target(resource_id="r-1")) is not None


def test_a_rerun_after_complete_only_waits(fake, run, tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(SMALL)
    fake.link_outcome = "uploaded"
    run(str(path), "--resource", "r-1", "--wait", "--timeout", "0")
    fake.link_outcome = "linked"
    fake.part_puts.clear()
    code, out = run(str(path), "--resource", "r-1", "--wait")
    assert code == 0, out
    assert out["state"] == "linked" and out["linked_url"] and fake.part_puts == {}


def test_the_state_file_holds_no_token_and_no_url(fake, run, big, cache):
    fake.put_faults = {2: [500] * 20}
    run(str(big), "--resource", "r-1")
    [path] = cache.glob("*.json")
    text = path.read_text()
    assert "owner-token" not in text and "http" not in text
    assert UploadState(**json.loads(text)).upload_id == fake.only_upload().id
