"""What goes wrong in production, on real parts: duplicate and reordered events, CKAN down, a killed worker."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.moto import drain_queue
from tests.support.pipeline import (
    issue,
    pipeline_environ,
    put,
    qcluster,
    run_command,
    upload_as_editor,
    wait_for_state,
    world_environ,
)
from tests.support.processes import stop_process_group, wait_for
from tests.support.tcp_proxy import TcpProxy
from uploads import storage
from uploads.models import LinkAttempt, ResourceLease, StorageEvent, Upload, UploadState
from uploads.services.sweep import run_sweep

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

CSV = b"id,value\n1,alpha\n2,beta\n"


@pytest.fixture
def ckan_proxy(ckan_site) -> Iterator[TcpProxy]:
    """A proxy in front of the shared CKAN: stopping it takes CKAN away from our children only."""
    proxy = TcpProxy(ckan_site.url).start()
    yield proxy
    proxy.release()
    proxy.stop()


def send_raw(storage_world, bodies: list[str]) -> None:
    for body in bodies:
        storage_world.sqs.send_message(QueueUrl=storage_world.queue_url, MessageBody=body)


def take_messages(storage_world) -> list[str]:
    """Read and delete the queued S3 notifications, keeping their raw bodies to send again."""
    return [json.dumps(body) for body in drain_queue(storage_world) if "Records" in body]


def test_an_event_delivered_three_times_links_once(client, storage_world, ckan_world, ckan_settings, tmp_path):
    env = world_environ(storage_world, ckan_settings)
    issued = upload_as_editor(client, ckan_world, filename="dup.csv", data=CSV)
    [message] = take_messages(storage_world)

    with qcluster(env, tmp_path / "qcluster.log"):
        # Two copies arrive together, the third after the link is done.
        send_raw(storage_world, [message, message])
        run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
        wait_for_state(issued["upload_id"], UploadState.LINKED)
        send_raw(storage_world, [message])
        run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
        time.sleep(2)  # give the cluster time to run anything (wrongly) enqueued

    event = StorageEvent.objects.get(key=issued["key"])
    assert event.deliveries == 3
    attempts = list(LinkAttempt.objects.filter(upload_id=issued["upload_id"]).values_list("outcome", flat=True))
    assert attempts == ["linked"]
    assert Upload.objects.get(pk=issued["upload_id"]).attempts == 1


def test_events_in_reverse_order_leave_the_newest_object_linked(
    client, storage_world, ckan_world, ckan_settings, tmp_path
):
    env = world_environ(storage_world, ckan_settings)
    resource_id = ckan_world.resource["id"]
    older = issue(client, ckan_world.editor.token, resource_id, filename="v1.csv", data=CSV, content_type="text/csv")
    newer_data = CSV + b"3,gamma\n"
    newer = issue(
        client, ckan_world.editor.token, resource_id, filename="v2.csv", data=newer_data, content_type="text/csv"
    )
    put(older, CSV)
    time.sleep(1.1)  # S3 Last-Modified has one-second resolution
    put(newer, newer_data)
    by_key = {}
    for body in take_messages(storage_world):
        by_key["v2" if "v2.csv" in body else "v1"] = body
    assert set(by_key) == {"v1", "v2"}

    with qcluster(env, tmp_path / "qcluster.log"):
        send_raw(storage_world, [by_key["v2"]])
        run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
        wait_for_state(newer["upload_id"], UploadState.LINKED)
        send_raw(storage_world, [by_key["v1"]])
        run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
        wait_for_state(older["upload_id"], UploadState.SUPERSEDED)

    resource = ckan_world.site.resource_show(resource_id)
    assert resource["url"] == storage.public_url(newer["key"])
    assert int(resource["size"]) == len(newer_data)
    assert Upload.objects.get(pk=newer["upload_id"]).state == UploadState.LINKED
    [attempt] = LinkAttempt.objects.filter(upload_id=older["upload_id"])
    assert attempt.outcome == "superseded"


def sweep_until(condition, *, timeout: float, what: str) -> None:
    """Run the sweep (as the every-minute schedule would) until ``condition()`` holds."""

    def swept() -> object:
        run_sweep()
        return condition()

    wait_for(swept, timeout=timeout, interval=0.5, what=what)


def test_ckan_down_during_linking_retries_then_links_when_it_returns(
    client, storage_world, ckan_world, ckan_settings, ckan_proxy, tmp_path
):
    env = pipeline_environ(storage_world, ckan_url=ckan_proxy.url, ckan_token=ckan_settings.sysadmin_token)
    issued = upload_as_editor(client, ckan_world, filename="down.csv", data=CSV)
    ckan_proxy.stop()
    upload_id = issued["upload_id"]

    with qcluster(env, tmp_path / "qcluster.log"):
        run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
        sweep_until(
            lambda: LinkAttempt.objects.filter(upload_id=upload_id, outcome="retry").count() >= 2,
            timeout=60,
            what="two failed attempts while CKAN is down",
        )
        upload = Upload.objects.get(pk=upload_id)
        assert upload.state == UploadState.UPLOADED
        assert "could not be reached" in upload.last_error
        assert upload.next_attempt_at is not None

        ckan_proxy.start()
        sweep_until(
            lambda: Upload.objects.get(pk=upload_id).state == UploadState.LINKED,
            timeout=60,
            what="the link once CKAN is back",
        )

    outcomes = list(
        LinkAttempt.objects.filter(upload_id=upload_id).order_by("started_at").values_list("outcome", flat=True)
    )
    assert outcomes[-1] == "linked"
    assert set(outcomes[:-1]) == {"retry"} and len(outcomes) >= 3
    resource = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert resource["url"] == storage.public_url(issued["key"])
    assert resource["description"] == "Original description, must survive patches"


def test_a_qcluster_killed_mid_link_is_finished_by_another_worker_within_a_minute(
    client, storage_world, ckan_world, ckan_settings, ckan_proxy, tmp_path
):
    # CKAN "hangs" (the proxy holds connections) so the worker sits inside resource_patch. The
    # claim and the resource's lease expire LINK_CLAIM_TIMEOUT_SECONDS (default 30) after the
    # worker renewed them just before the patch; CKAN_TIMEOUT_SECONDS stays below that.
    env = pipeline_environ(
        storage_world, ckan_url=ckan_proxy.url, ckan_token=ckan_settings.sysadmin_token, CKAN_TIMEOUT_SECONDS="20"
    )
    issued = upload_as_editor(client, ckan_world, filename="kill.csv", data=CSV)
    upload_id = issued["upload_id"]
    ckan_proxy.hold()

    run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
    with qcluster(env, tmp_path / "qcluster-1.log") as doomed:
        wait_for(
            lambda: Upload.objects.get(pk=upload_id).claim_token is not None and ckan_proxy.connections > 0,
            timeout=60,
            what="a worker to claim the upload and call CKAN",
        )
        os.killpg(doomed.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stop_process_group(doomed)
    assert doomed.returncode == -signal.SIGKILL
    claimed = Upload.objects.get(pk=upload_id)
    assert claimed.state == UploadState.UPLOADED and claimed.claim_token is not None  # orphaned claim
    assert ResourceLease.objects.get(resource_id=ckan_world.resource["id"]).holder == claimed.claim_token
    assert not LinkAttempt.objects.filter(upload_id=upload_id).exists()  # the killed try left no row

    # CKAN answers again; a new cluster and the sweep (as the minute schedule runs it) finish the job.
    ckan_proxy.stop()
    ckan_proxy.release()
    ckan_proxy.start()
    with qcluster(env, tmp_path / "qcluster-2.log"):
        sweep_until(
            lambda: Upload.objects.get(pk=upload_id).state == UploadState.LINKED,
            timeout=90,
            what="the sweep to release the claim and a worker to link",
        )
    taken_over_after = time.monotonic() - killed_at
    assert taken_over_after < 60, f"linked {taken_over_after:.0f} s after the kill"

    upload = Upload.objects.get(pk=upload_id)
    assert upload.claim_token is None
    assert upload.attempts == 2
    [attempt] = LinkAttempt.objects.filter(upload_id=upload_id)
    assert (attempt.trigger, attempt.outcome) == ("retry", "linked")
    resource = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert resource["url"] == storage.public_url(issued["key"])
