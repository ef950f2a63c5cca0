"""Which CKAN user a token belongs to is cached across processes, not per process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import responses
from django.conf import settings
from django.test import override_settings

from tests.support.processes import child_environ
from uploads.services import owner

CKAN = "http://ckan.invalid"
TOKEN = "client-token-shared-across-processes"

pytestmark = pytest.mark.django_db(transaction=True)

# In another process, with CKAN unreachable: the identity can only come from the shared cache.
CHILD = """
from uploads.services import owner
print("IDENTITY", *owner.whoami(%r))
"""


def whoami_in_a_child_process() -> subprocess.CompletedProcess[str]:
    env = child_environ(CKAN_URL="http://127.0.0.1:9")
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CHILD % TOKEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )


def test_an_identity_asked_of_ckan_once_is_known_to_another_process():
    with override_settings(CKAN_URL=CKAN), responses.RequestsMock() as mock:
        mock.post(f"{CKAN}/api/3/action/user_show", json={"success": True, "result": {"name": "alice", "id": "u-1"}})
        assert owner.whoami(TOKEN) == ("alice", "u-1")
        assert owner.whoami(TOKEN) == ("alice", "u-1")
        assert len(mock.calls) == 1  # the second came from the cache

    child = whoami_in_a_child_process()
    assert "IDENTITY alice u-1" in child.stdout, child.stdout + child.stderr


def test_without_the_shared_entry_the_other_process_must_ask_ckan():
    """The control: the same child fails when nothing was cached (so the test above can fail)."""
    child = whoami_in_a_child_process()
    assert child.returncode != 0
    assert "IDENTITY" not in child.stdout
