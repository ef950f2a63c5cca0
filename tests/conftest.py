from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from tests.support.moto import MotoServer, StorageWorld, make_storage_world


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def storage_world(moto_server: MotoServer) -> Iterator[StorageWorld]:
    """A fresh moto bucket with S3 events into SQS, and the settings pointing at it."""
    moto_server.reset()
    world = make_storage_world(moto_server, with_queue=True)
    with override_settings(**world.settings()):
        yield world


@pytest.fixture(scope="session")
def ckan_site():
    """A real local CKAN started by scripts/local_ckan.py (skipped, with the reason, without PostgreSQL)."""
    import os

    from tests.support.ckan_site import CkanUnavailable, ensure_local_ckan

    try:
        return ensure_local_ckan()
    except CkanUnavailable as exc:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(f"a real CKAN is required here but could not start: {exc}")
        pytest.skip(f"real CKAN unavailable: {exc}")


@pytest.fixture(scope="session")
def worker_node():
    """``node`` with worker/'s npm packages installed from its lock file (``npm ci`` when missing).

    Skipped, with the reason, when Node is absent; with REQUIRE_NODE=1 (CI) that is a failure.
    """
    import os
    import shutil
    import subprocess

    from tests.support.processes import ROOT

    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        reason = "node and npm not found: the Worker tests run worker/ in workerd through Miniflare (npm)"
        if os.environ.get("REQUIRE_NODE"):
            pytest.fail(f"Node is required here (REQUIRE_NODE=1): {reason}")
        pytest.skip(reason)
    worker_dir = ROOT / "worker"
    if not (worker_dir / "node_modules" / "miniflare").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=worker_dir, capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in worker/ failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return node


@pytest.fixture
def ckan_world(ckan_site):
    """An org, a public dataset with a resource, and an editor, a viewer and an outsider."""
    from tests.support.ckan_site import make_world

    return make_world(ckan_site)


@pytest.fixture
def ckan_settings(ckan_site):
    """Point the service at the real CKAN, linking with the sysadmin token."""
    with override_settings(CKAN_URL=ckan_site.url, CKAN_API_TOKEN=ckan_site.sysadmin_token):
        yield ckan_site


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Drop the test database cleanly even if a killed child's connection is still closing."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture
def enqueued(monkeypatch):
    """Link tasks the code under test sent to the broker, as (upload id, trigger) pairs."""
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "uploads.services.dispatch.send_link_tasks",
        lambda links: sent.extend((str(upload_id), trigger) for upload_id, trigger, _ in links),
    )
    return sent


@pytest.fixture(autouse=True)
def _fresh_cache(request):
    """Each test starts with an empty cache (who a token belongs to is cached across requests).

    Without Redis the cache is a database table: only a test with database access can use it.
    """
    from django.core.cache import cache

    from uploads.services.owner import forget_local_identities

    forget_local_identities()
    names = set(request.fixturenames)
    if not request.node.get_closest_marker("django_db"):
        # A fixture of the test asks for the database later: open it now, for the cache's table.
        for name in ("transactional_db", "db"):
            if name in names:
                request.getfixturevalue(name)
                break
        else:
            yield
            return
    cache.clear()
    yield


@pytest.fixture(scope="session")
def azurite():
    """A real Azurite (Blob + Queue) from tools/azurite's lock file; skipped without Node unless REQUIRE_NODE."""
    from tests.support.azurite import Azurite, AzuriteUnavailable, require_node

    try:
        server = Azurite()
    except AzuriteUnavailable as exc:
        if require_node():
            pytest.fail(f"Azurite is required here (REQUIRE_NODE) but could not start: {exc}")
        pytest.skip(f"Azurite unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture
def azure_world(azurite):
    """A fresh Azurite container and queue, and the settings selecting the Azure store."""
    from tests.support.azurite import make_azure_world

    world = make_azure_world(azurite)
    with override_settings(**world.settings()):
        yield world
