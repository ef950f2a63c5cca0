"""The per-resource lease: no transaction open while CKAN answers, one patch at a time, takeover after a dead worker.

CKAN is a fake here (unit tests); tests/integration/test_faults.py kills a real qcluster mid-patch
against the real CKAN.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
import responses
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from tests.uploads.test_link import PATCH_URL, RESOURCE_ID, make_upload, ok_patch, patches
from uploads import ckan, storage
from uploads.models import LinkAttempt, ResourceLease, Upload, UploadState
from uploads.services import link
from uploads.services.link import link_upload
from uploads.services.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("fake_ckan")


@pytest.fixture
def fake_ckan():
    from django.conf import settings as dj_settings

    with (
        override_settings(
            CKAN_URL="http://ckan.example.test",
            CKAN_API_TOKEN="service-token-xyz",
            LINK_MAX_ATTEMPTS=3,
            LINK_CLAIM_TIMEOUT_SECONDS=10,
            CKAN_TIMEOUT_SECONDS=5,
        ),
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        assert dj_settings.LINK_CLAIM_TIMEOUT_SECONDS == 10
        mock.add_passthru("http://127.0.0.1")
        yield mock


def ckan_answer(request) -> tuple[int, dict, str]:
    return 200, {}, json.dumps({"success": True, "result": {"id": RESOURCE_ID}})


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_and_other_writers_proceed_while_ckan_answers(storage_world, fake_ckan, monkeypatch):
    upload = make_upload(storage_world)
    other = make_upload(storage_world, filename="other.csv")
    seen: dict[str, object] = {}
    real_patch = ckan.resource_patch

    def patch_and_look(resource_id, fields, *, token):
        seen["in_atomic_block"] = connection.in_atomic_block
        seen["needs_rollback"] = connection.needs_rollback

        # Another process's writer (here a thread with its own connection) must not wait for us:
        # with SQLite's write lock held this UPDATE would block for the busy timeout (20 s).
        def write() -> None:
            try:
                started = time.monotonic()
                with transaction.atomic():
                    Upload.objects.filter(pk=other.pk).update(last_error="written during the patch")
                seen["write_seconds"] = time.monotonic() - started
            finally:
                connection.close()

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=30)
        return real_patch(resource_id, fields, token=token)

    monkeypatch.setattr(ckan, "resource_patch", patch_and_look)
    ok_patch(fake_ckan)

    assert link_upload(upload_id=upload.pk, trigger="event") == "linked"
    assert seen["in_atomic_block"] is False
    assert seen["write_seconds"] < 2.0  # type: ignore[operator]
    assert Upload.objects.get(pk=other.pk).last_error == "written during the patch"
    lease = ResourceLease.objects.get(resource_id=RESOURCE_ID)
    assert (lease.holder, lease.fence, lease.repatch) == (None, 1, False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("run", range(2))
def test_racing_workers_patch_one_at_a_time_and_the_newest_object_wins(storage_world, fake_ckan, run):
    t0 = timezone.now()
    uploads = [make_upload(storage_world, issued_at=t0 - timedelta(minutes=10 - i)) for i in range(4)]
    newest = uploads[-1]
    active = 0
    most_active = 0
    in_ckan: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(uploads))

    def slow_patch(request):
        nonlocal active, most_active
        with lock:
            active += 1
            most_active = max(most_active, active)
        time.sleep(0.3)
        with lock:
            active -= 1
            in_ckan.append(json.loads(request.body)["url"])
        return ckan_answer(request)

    fake_ckan.add_callback(responses.POST, PATCH_URL, callback=slow_patch)
    outcomes: dict[uuid.UUID, str] = {}

    def work(upload: Upload) -> None:
        try:
            start.wait(timeout=10)
            outcomes[upload.pk] = link_upload(upload_id=upload.pk, trigger="event")
        finally:
            connection.close()

    # Oldest first in one run, newest first in the other.
    order = uploads if run == 0 else list(reversed(uploads))
    threads = [threading.Thread(target=work, args=(u,)) for u in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert most_active == 1, "two patches of one resource were in flight at once"
    assert in_ckan and in_ckan[-1] == storage.public_url(newest.key)
    states = dict(Upload.objects.filter(pk__in=[u.pk for u in uploads]).values_list("pk", "state"))
    assert states[newest.pk] == UploadState.LINKED
    assert all(states[u.pk] == UploadState.SUPERSEDED for u in uploads[:-1])
    assert outcomes[newest.pk] == "linked"
    assert set(outcomes.values()) <= {"linked", "superseded"}
    assert ResourceLease.objects.get(resource_id=RESOURCE_ID).holder is None


@pytest.mark.django_db(transaction=True)
def test_a_frozen_worker_is_taken_over_after_the_lease_and_its_late_patch_is_written_over(
    storage_world, fake_ckan, monkeypatch
):
    """A worker stuck past its lease (as a SIGKILLed one, but it wakes up): never two patches at once,
    and when its late patch lands after the newer one, the newest object is written into CKAN again."""
    t0 = timezone.now()
    older = make_upload(storage_world, issued_at=t0 - timedelta(minutes=5))
    newer = make_upload(storage_world, issued_at=t0)
    frozen = threading.Event()
    wake = threading.Event()
    in_ckan: list[str] = []
    active = 0
    most_active = 0
    lock = threading.Lock()

    def patch(request):
        nonlocal active, most_active
        url = json.loads(request.body)["url"]
        with lock:
            active += 1
            most_active = max(most_active, active)
        try:
            if url.endswith(older.key) and not frozen.is_set():
                frozen.set()
                with lock:
                    active -= 1  # frozen before sending: the request leaves only when it wakes up
                wake.wait(timeout=60)
                with lock:
                    active += 1
            in_ckan.append(url)
            return ckan_answer(request)
        finally:
            with lock:
                active -= 1

    fake_ckan.add_callback(responses.POST, PATCH_URL, callback=patch)
    outcome: dict[str, str] = {}

    def older_worker() -> None:
        try:
            outcome["older"] = link_upload(upload_id=older.pk, trigger="event")
        finally:
            connection.close()

    # The frozen worker outlives its lease (1 s here); the newer upload's link then takes it over.
    with override_settings(LINK_CLAIM_TIMEOUT_SECONDS=1):
        thread = threading.Thread(target=older_worker)
        thread.start()
        assert frozen.wait(timeout=10)
        time.sleep(1.2)
        assert link_upload(upload_id=newer.pk, trigger="event") == "linked"
        wake.set()
        thread.join(timeout=30)

    # The old worker's patch landed last, but its fence was gone: it is not recorded as linked...
    assert in_ckan == [storage.public_url(newer.key), storage.public_url(older.key)]
    assert outcome["older"] == "retry"
    lease = ResourceLease.objects.get(resource_id=RESOURCE_ID)
    assert lease.repatch is True and lease.fence == 2
    # ...and its retry writes the newest object into CKAN again, then ends superseded.
    Upload.objects.filter(pk=older.pk).update(next_attempt_at=timezone.now())
    assert link_upload(upload_id=older.pk, trigger="retry") == "superseded"
    assert in_ckan[-1] == storage.public_url(newer.key)
    assert ResourceLease.objects.get(resource_id=RESOURCE_ID).repatch is False
    states = dict(Upload.objects.filter(pk__in=[older.pk, newer.pk]).values_list("pk", "state"))
    assert states == {older.pk: UploadState.SUPERSEDED, newer.pk: UploadState.LINKED}
    assert most_active == 1


@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_claim_and_lease_are_taken_over_after_the_lease_period(storage_world, fake_ckan):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world)
    with override_settings(LINK_CLAIM_TIMEOUT_SECONDS=1):
        # A worker claimed the upload, took the resource's lease and was SIGKILLed inside resource_patch.
        dead = link._claim(upload.pk, trigger="event", force=False, now=timezone.now())
        assert dead is not None
        assert link._acquire_lease(RESOURCE_ID, upload.pk, dead) == 1
        # Within the lease nobody else touches it: another task is a no-op, the sweep releases nothing.
        assert link_upload(upload_id=upload.pk, trigger="retry") == "noop"
        assert run_sweep()["released"] == 0
        assert patches(fake_ckan) == []
        # Once the lease period (LINK_CLAIM_TIMEOUT_SECONDS, 1 s here) has passed, the sweep frees the
        # claim, and the next worker takes the expired resource lease over and links.
        time.sleep(1.2)
        assert run_sweep()["released"] == 1
        assert link_upload(upload_id=upload.pk, trigger="retry") == "linked"
    assert len(patches(fake_ckan)) == 1
    lease = ResourceLease.objects.get(resource_id=RESOURCE_ID)
    assert (lease.holder, lease.fence) == (None, 2)
    [attempt] = LinkAttempt.objects.filter(upload_id=upload.pk)
    assert attempt.outcome == "linked"


@pytest.mark.django_db(transaction=True)
def test_a_claim_past_its_lease_is_taken_over_directly_and_the_old_worker_stops_before_patching(
    storage_world, fake_ckan
):
    ok_patch(fake_ckan)
    upload = make_upload(storage_world)
    stale = timezone.now() - timedelta(seconds=11)
    slow = link._claim(upload.pk, trigger="event", force=False, now=stale)
    assert slow is not None
    # Its claim expired (it sat in a long HEAD): a later task takes the upload over and links it.
    assert link_upload(upload_id=upload.pk, trigger="retry") == "linked"
    # The slow worker comes back: its renewal fails, it never patches.
    assert link._renew_claim(upload.pk, slow) is False
    info = storage.head_object(upload.key)
    attempt = LinkAttempt(upload=upload, trigger="event", outcome="noop")
    Upload.objects.filter(pk=upload.pk).update(state=UploadState.UPLOADED)  # even if it looked linkable
    assert link._decide_and_patch(upload.pk, claim=slow, info=info, force=False, attempt=attempt) == "noop"
    assert len(patches(fake_ckan)) == 1
