"""A steward sees names instead of ids and narrows to one organization, in a real headless Chromium.

The uploads are issued through the API against the real local CKAN, so the names are the ones
the issuance kept from CKAN's own answers.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import override_settings

from dashboard.roles import STEWARDS, ensure_roles
from tests.browser.test_replay_in_browser import ARTIFACTS, browser  # noqa: F401 (the fixture)
from tests.support.ckan_site import make_world
from tests.support.pipeline import upload_as_editor
from uploads.models import Upload

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.ckan,
    pytest.mark.django_db(transaction=True),
]


def log_in(browser, live_server, username: str):  # noqa: F811 (browser is the fixture's value)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return page


def test_a_steward_sees_names_and_filters_by_organization(
    browser,  # noqa: F811
    live_server,
    client,
    storage_world,
    ckan_site,
    ckan_settings,
):
    ensure_roles()
    user = User.objects.create_user("stella", password="a-long-test-password", is_staff=True)
    user.groups.add(Group.objects.get(name=STEWARDS))
    water = make_world(ckan_site, "water")
    roads = make_world(ckan_site, "roads")
    water_upload = upload_as_editor(client, water, filename="levels.csv", data=b"a,b\n1,2\n")
    upload_as_editor(client, roads, filename="closures.csv", data=b"a,b\n3,4\n")
    kept = Upload.objects.get(pk=water_upload["upload_id"])
    assert kept.organization_title == water.org["title"]

    with override_settings(CKAN_URL=ckan_site.url):
        page = log_in(browser, live_server, "stella")
        page.goto(f"{live_server.url}/admin/uploads/upload/")
        table = page.locator("#result_list")
        for world in (water, roads):
            assert table.locator(f'a.ckan-dataset:text-is("{world.dataset["title"]}")').count() == 1
            org_link = table.locator(f'a.ckan-organization:text-is("{world.org["title"]}")')
            assert org_link.get_attribute("href") == f"{ckan_site.url}/organization/{world.org['name']}"
        assert table.locator('a.ckan-resource:text-is("report.csv")').count() == 2
        # The resource id is on the detail page, not in the list.
        assert water.resource["id"] not in table.inner_text()

        # The organization filter: type the CKAN name, press Enter.
        box = page.locator('details[data-filter-title="organization (CKAN name)"] input[name="organization"]')
        box.fill(water.org["name"])
        box.press("Enter")
        page.wait_for_url(f"**/admin/uploads/upload/?organization={water.org['name']}")
        assert "levels.csv" in page.locator("#result_list").inner_text()
        assert "closures.csv" not in page.locator("#result_list").inner_text()

        # The detail page keeps the ids.
        page.click('#result_list a[href*="/change/"]')
        detail = page.locator("#content-main").inner_text()
        assert water.resource["id"] in detail and water.dataset["id"] in detail

        # The overview narrowed to the organization.
        page.goto(f"{live_server.url}/admin/")
        page.fill("#overview-org-input", water.org["name"])
        page.click('#overview-organization input[type="submit"]')
        page.wait_for_selector("#overview-org-title")
        assert page.locator("#overview-org-title").inner_text() == water.org["title"]
        assert page.locator('a[data-count="total"]').inner_text() == "1"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "overview-one-organization.png"), full_page=True)
