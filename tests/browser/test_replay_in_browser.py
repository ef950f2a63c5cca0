"""An operator replays a failed upload in a real headless Chromium; a real qcluster links it in a real CKAN."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import override_settings

from dashboard.roles import OPERATORS, STEWARDS, ensure_roles
from tests.support.pipeline import (
    qcluster,
    upload_as_editor,
    wait_for_state,
    world_environ,
)
from tests.support.processes import ROOT, wait_for
from uploads.models import LinkAttempt, Upload, UploadState
from uploads.services.link import link_upload

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.ckan,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
CSV = b"station,temp\nA,12.5\nB,13.0\n"


@pytest.fixture
def browser(monkeypatch):
    """Debian's Chromium driven by Playwright (no downloaded browser)."""
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    # Playwright's sync API runs an event loop in this thread; the ORM calls between page
    # actions are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def person(username: str, group: str) -> None:
    user = User.objects.create_user(username, password="a-long-test-password", is_staff=True)
    user.groups.add(Group.objects.get(name=group))


def log_in(browser, live_server, username: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return page


def failed_upload(client, ckan_world) -> Upload:
    """A real upload whose first real link attempt failed: the service token lacked the right."""
    issued = upload_as_editor(client, ckan_world, filename="temps.csv", data=CSV)
    response = client.post(
        f"/api/v1/uploads/{issued['upload_id']}/complete", HTTP_AUTHORIZATION=ckan_world.editor.token
    )
    assert response.status_code == 202, response.content
    # The viewer may read the dataset but not write it: CKAN answers 403, a permanent failure.
    with override_settings(CKAN_API_TOKEN=ckan_world.viewer.token):
        outcome = link_upload(upload_id=uuid.UUID(issued["upload_id"]), trigger="complete")
    assert outcome == "failed"
    upload = Upload.objects.get(pk=issued["upload_id"])
    assert upload.state == UploadState.FAILED, upload.last_error
    return upload


def test_an_operator_replays_a_failed_upload_and_sees_it_linked(
    browser, live_server, client, storage_world, ckan_world, ckan_settings, tmp_path
):
    ensure_roles()
    person("otto", OPERATORS)
    person("stella", STEWARDS)
    upload = failed_upload(client, ckan_world)
    env = world_environ(storage_world, ckan_settings)

    with qcluster(env, tmp_path / "qcluster.log"):
        # The task queued by the client's complete call finds the upload failed and leaves it so.
        from django_q.models import OrmQ

        wait_for(lambda: not OrmQ.objects.exists(), timeout=30, what="the queued link task to be consumed")
        assert Upload.objects.get(pk=upload.pk).state == UploadState.FAILED

        page = log_in(browser, live_server, "otto")
        page.click('a[data-count="failed"]')
        page.wait_for_url("**/admin/uploads/upload/?state__exact=failed")
        page.click(f'a[href^="/admin/uploads/upload/{upload.pk}/change/"]')
        assert page.locator(".ledger-badge").first.inner_text() == "Failed"
        page.click("#replay-button")
        assert "Replay queued for temps.csv" in page.locator(".messagelist").inner_text()

        wait_for_state(str(upload.pk), UploadState.LINKED, timeout=60)
        page.reload()
        assert page.locator(".ledger-badge").first.inner_text() == "Linked"
        assert "Link attempt (Replay by otto)" in page.locator("#timeline").inner_text()

        page.goto(f"{live_server.url}/admin/")
        page.wait_for_selector("#overview-series svg")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    attempt = LinkAttempt.objects.filter(upload=upload).order_by("-started_at").first()
    assert (attempt.trigger, attempt.triggered_by, attempt.outcome, attempt.ckan_status) == (
        "replay",
        "otto",
        "linked",
        200,
    )
    resource = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert resource["url"] == Upload.objects.get(pk=upload.pk).linked_url
    assert resource["description"] == "Original description, must survive patches"

    steward = log_in(browser, live_server, "stella")
    steward.goto(f"{live_server.url}/admin/uploads/upload/{upload.pk}/change/")
    assert steward.locator("#timeline").is_visible()
    assert steward.locator("#replay-button").count() == 0
    forged = steward.request.post(
        f"{live_server.url}/admin/uploads/upload/{upload.pk}/replay/",
        headers={"X-CSRFToken": json.dumps("")},
    )
    assert forged.status == 403
