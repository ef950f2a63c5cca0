"""Scale-out setup: django-q2 on Redis instead of the database, end to end on real parts."""

from __future__ import annotations

import os
import socket

import pytest
from django_q.models import OrmQ

from tests.support.pipeline import qcluster, run_command, upload_as_editor, wait_for_state, world_environ
from uploads.models import LinkAttempt, UploadState

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

REDIS = ("127.0.0.1", 6379)
CSV = b"id,v\n1,2\n"


@pytest.fixture
def redis_url():
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError as exc:
        reason = f"Redis is not reachable at {REDIS[0]}:{REDIS[1]} ({exc})"
        if os.environ.get("REQUIRE_REDIS"):
            pytest.fail(reason)
        pytest.skip(reason)
    # A database of its own, so a developer's broker data is never touched.
    return f"redis://{REDIS[0]}:{REDIS[1]}/11"


def test_an_upload_is_linked_through_a_redis_broker(
    client, storage_world, ckan_world, ckan_settings, redis_url, tmp_path
):
    env = world_environ(storage_world, ckan_settings, REDIS_URL=redis_url)
    issued = upload_as_editor(client, ckan_world, filename="r.csv", data=CSV)
    run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
    # The link task went to Redis, not to the database broker's table.
    assert OrmQ.objects.count() == 0

    with qcluster(env, tmp_path / "qcluster.log"):
        upload = wait_for_state(issued["upload_id"], UploadState.LINKED)

    assert ckan_world.site.resource_show(ckan_world.resource["id"])["url"] == upload.linked_url
    [attempt] = LinkAttempt.objects.filter(upload_id=issued["upload_id"])
    assert attempt.outcome == "linked"
