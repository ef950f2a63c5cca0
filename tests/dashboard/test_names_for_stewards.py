"""Stewards see datasets, organizations and resources by name, with links to CKAN, and filter by them."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.test import override_settings

from tests.dashboard.conftest import make_upload
from uploads.models import Upload, UploadState

pytestmark = pytest.mark.django_db

LIST = "/admin/uploads/upload/"
CKAN = "https://ckan.example.org"


def water(**fields) -> Upload:
    values = {
        "package_id": "11111111-1111-1111-1111-111111111111",
        "dataset_name": "river-levels",
        "dataset_title": "River levels 2024",
        "resource_name": "Daily levels",
        "organization_name": "water-board",
        "organization_title": "Water Board",
    }
    values.update(fields)
    return make_upload(**values)


def roads(**fields) -> Upload:
    values = {
        "package_id": "22222222-2222-2222-2222-222222222222",
        "dataset_name": "road-works",
        "dataset_title": "Road works",
        "resource_name": "Closures",
        "organization_name": "transport",
        "organization_title": "Transport Office",
    }
    values.update(fields)
    return make_upload(**values)


def listing(client, **params) -> str:
    response = client.get(f"{LIST}?{urlencode(params)}" if params else LIST)
    assert response.status_code == 200
    return response.content.decode()


@override_settings(CKAN_URL=CKAN)
def test_the_list_shows_names_with_links_to_ckan_pages_not_ids(as_steward):
    upload = water(filename="levels.csv")
    html = listing(as_steward)
    assert f'href="{CKAN}/dataset/river-levels" class="ckan-dataset"' in html
    assert ">River levels 2024</a>" in html
    assert f'href="{CKAN}/organization/water-board" class="ckan-organization"' in html
    assert ">Water Board</a>" in html
    resource_url = f"{CKAN}/dataset/{upload.package_id}/resource/{upload.resource_id}"
    assert f'href="{resource_url}" class="ckan-resource"' in html
    assert ">Daily levels</a>" in html
    # Ids are for the detail page, not the list.
    assert upload.resource_id not in html.replace(resource_url, "")


@override_settings(CKAN_URL=CKAN)
def test_the_upload_page_shows_names_and_keeps_the_ids(as_steward):
    upload = water()
    html = as_steward.get(f"/admin/uploads/upload/{upload.pk}/change/").content.decode()
    assert "River levels 2024" in html and "Water Board" in html and "Daily levels" in html
    assert upload.resource_id in html and upload.package_id in html and str(upload.pk) in html


def test_filters_by_organization_and_dataset_name(as_steward):
    water(filename="w.csv")
    roads(filename="r.csv")
    html = listing(as_steward, organization="water-board")
    assert "w.csv" in html and "r.csv" not in html
    html = listing(as_steward, dataset_name="road-works")
    assert "r.csv" in html and "w.csv" not in html
    html = listing(as_steward, organization="transport", dataset_name="river-levels")
    assert "w.csv" not in html and "r.csv" not in html


def test_search_finds_a_dataset_by_the_start_of_its_name(as_steward):
    water(filename="w.csv")
    roads(filename="r.csv")
    html = listing(as_steward, q="river")
    assert "w.csv" in html and "r.csv" not in html


def test_an_upload_issued_before_names_were_kept_still_lists(as_steward):
    make_upload(filename="legacy.csv")
    html = listing(as_steward)
    assert "legacy.csv" in html


def test_the_overview_narrowed_to_one_organization(as_steward):
    water(state=UploadState.FAILED, last_error="CKAN refused the link: water")
    water(state=UploadState.LINKED)
    roads(state=UploadState.FAILED, last_error="CKAN refused the link: roads")
    roads(state=UploadState.FAILED, last_error="CKAN refused the link: roads")

    everything = as_steward.get("/admin/").content.decode()
    assert 'data-count="total">4<' in everything and 'data-count="failed">3<' in everything

    html = as_steward.get("/admin/?organization=water-board").content.decode()
    assert 'data-count="total">2<' in html
    assert 'data-count="failed">1<' in html and 'data-count="linked">1<' in html
    assert '<span id="overview-org-title">Water Board</span>' in html
    assert "refused the link: water" in html and "refused the link: roads" not in html
    # Every link from the narrowed overview keeps the organization.
    assert f'href="{LIST}?state__exact=failed&amp;organization=water-board"' in html


@override_settings(CKAN_URL=CKAN)
def test_images_list_as_images_of_their_organization_or_group_and_filter_by_kind(as_steward):
    org_id = "33333333-3333-3333-3333-333333333333"
    make_upload(
        filename="logo.png",
        resource_id="",
        package_id="",
        target_kind="organization",
        target_id=org_id,
        target_name="water-board",
        target_title="Water Board",
        organization_name="water-board",
        organization_title="Water Board",
    )
    make_upload(
        filename="banner.webp",
        resource_id="",
        package_id="",
        target_kind="group",
        target_id="44444444-4444-4444-4444-444444444444",
        target_name="climate",
        target_title="Climate",
    )
    water(filename="levels.csv")
    html = listing(as_steward)
    assert f'href="{CKAN}/organization/water-board" class="ckan-organization-image"' in html
    assert ">image of organization Water Board</a>" in html
    assert f'href="{CKAN}/group/climate" class="ckan-group-image"' in html
    assert ">image of group Climate</a>" in html
    html = listing(as_steward, target_kind__exact="group")
    assert "banner.webp" in html and "logo.png" not in html and "levels.csv" not in html
    # The organization filter shows its image with its datasets' files; its id finds the image.
    html = listing(as_steward, organization="water-board")
    assert "logo.png" in html and "levels.csv" in html and "banner.webp" not in html
    html = listing(as_steward, q=org_id)
    assert "logo.png" in html and "levels.csv" not in html


@override_settings(CKAN_URL=CKAN)
def test_link_attempts_list_the_file_and_dataset_by_name(as_steward):
    from uploads.models import LinkAttempt

    upload = water(filename="levels.csv")
    LinkAttempt.objects.create(upload=upload, trigger="event", outcome="failed", error="CKAN refused")
    html = as_steward.get("/admin/uploads/linkattempt/").content.decode()
    assert "levels.csv" in html and ">River levels 2024</a>" in html
