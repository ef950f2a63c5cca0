"""Keys and links of the three link styles, and the privacy rule in each (no CKAN, no bucket)."""

from __future__ import annotations

import uuid

import pytest
from django.test import override_settings

from uploads import layout
from uploads.munge import munge_filename
from uploads.services import privacy
from uploads.validation import InvalidInput

RID = "0f5b4a3e-6c1d-4f7a-9b2e-3d4c5b6a7f80"
UID = uuid.UUID("12345678-9abc-4def-8123-456789abcdef")


def never_taken(key: str) -> bool:
    return False


@override_settings(LINK_STYLE="public", STORAGE_KEY_PREFIX="resources/api_uploads/")
def test_public_style_keys_name_their_upload():
    key = layout.build_upload_key(RID, UID, "My Data.csv", key_taken=never_taken)
    assert key.startswith(f"resources/api_uploads/{RID}/{UID}/")
    assert layout.upload_ids_by_key([key, "resources/api_uploads/not-ours.csv"]) == {key: UID}
    assert layout.listing_prefix() == "resources/api_uploads/"


@override_settings(LINK_STYLE="s3filestore", S3FILESTORE_STORAGE_PATH="my-site")
def test_s3filestore_style_keys_are_the_extensions_own():
    key = layout.build_upload_key(RID, UID, "Station Report (Final).CSV", key_taken=never_taken)
    assert key == f"my-site/resources/{RID}/station-report-final.csv"
    assert layout.listing_prefix() == "my-site/resources/"
    assert layout.link_fields(key) == {"url": "station-report-final.csv", "url_type": "upload"}


@override_settings(LINK_STYLE="s3filestore", S3FILESTORE_STORAGE_PATH="")
def test_without_a_storage_path_the_keys_start_at_resources():
    # ckanext-s3filestore joins with os.path.join("", "resources"): no leading slash.
    assert layout.build_upload_key(RID, UID, "a.csv", key_taken=never_taken) == f"resources/{RID}/a.csv"


@override_settings(LINK_STYLE="s3filestore", S3FILESTORE_STORAGE_PATH="ckan")
def test_a_name_already_in_the_ledger_gets_the_upload_ids_suffix_and_stays_munged():
    taken = {f"ckan/resources/{RID}/report.csv"}
    key = layout.build_upload_key(RID, UID, "Report.csv", key_taken=taken.__contains__)
    assert key == f"ckan/resources/{RID}/report-12345678.csv"
    name = key.rsplit("/", 1)[-1]
    assert munge_filename(name) == name  # CKAN finds it again at the same key


@override_settings(LINK_STYLE="s3filestore", S3FILESTORE_STORAGE_PATH="ckan")
def test_a_long_name_with_the_suffix_keeps_ckans_100_character_limit():
    long = "x" * 150 + ".csv"
    first = layout.build_upload_key(RID, UID, long, key_taken=never_taken)
    second = layout.build_upload_key(RID, UID, long, key_taken={first}.__contains__)
    name = second.rsplit("/", 1)[-1]
    assert len(name) == 100 and name.endswith("-12345678.csv") and munge_filename(name) == name


@override_settings(LINK_STYLE="s3filestore", S3FILESTORE_STORAGE_PATH="p" * 1000)
def test_a_key_over_s3s_limit_is_refused_as_bad_input():
    with pytest.raises(InvalidInput):
        layout.build_upload_key(RID, UID, "a.csv", key_taken=never_taken)


@override_settings(LINK_STYLE="s3filestore", CKAN_URL="http://ckan.example")
def test_s3filestore_links_compare_what_the_extension_resolves():
    key = f"resources/{RID}/report.csv"
    assert layout.linked_url(key, package_id="ds", resource_id=RID) == (
        f"http://ckan.example/dataset/ds/resource/{RID}/download/report.csv"
    )
    shown = {"url_type": "upload", "url": f"http://other-host/dataset/ds/resource/{RID}/download/report.csv"}
    assert layout.link_differs(key, "", shown) is False
    assert layout.link_differs(key, "", {**shown, "url": "https://elsewhere/x.csv", "url_type": ""}) is True
    assert layout.link_differs(key, "", {**shown, "url": shown["url"].replace("report", "other")}) is True


@override_settings(LINK_STYLE="s3filestore")
def test_s3filestore_disposition_is_the_extensions_except_for_pdf():
    key = f"resources/{RID}/report.csv"
    assert layout.content_disposition(key, "text/csv", "") == "attachment; filename=report.csv"
    assert layout.content_disposition(f"resources/{RID}/a.pdf", "application/pdf", "") == ""


@override_settings(LINK_STYLE="ckan_files", CKAN_FILES_STORAGE_PATH="ckan-files", CKAN_URL="http://ckan.example")
def test_ckan_files_keys_locations_and_links():
    key = layout.build_upload_key(RID, UID, "report.csv", key_taken=never_taken)
    assert key.startswith(f"ckan-files/{RID}/{UID}/")
    assert layout.storage_location(key) == key[len("ckan-files/") :]
    assert layout.upload_ids_by_key([key]) == {key: UID}
    assert layout.link_fields(key, file_id="f-1") == {"url": "http://ckan.example/file/download/f-1"}


@pytest.mark.parametrize("style", ["s3filestore", "ckan_files"])
def test_styles_served_through_ckan_issue_private_datasets_files(style):
    with override_settings(LINK_STYLE=style, PRIVATE_DATASET_UPLOADS="refuse"):
        assert privacy.check_issuance({"id": "ds", "private": True}) is True


@pytest.mark.parametrize(
    ("style", "acls", "private", "acl"),
    [
        ("public", True, False, "public-read"),
        ("public", False, False, ""),
        ("s3filestore", True, False, "public-read"),  # as the extension's `acl = auto`
        ("s3filestore", True, True, "private"),
        ("s3filestore", False, True, ""),  # R2: no ACLs, the bucket is private, CKAN signs
        ("ckan_files", True, False, "private"),  # CKAN reads the object for every reader
        ("ckan_files", True, True, "private"),
    ],
)
def test_the_acl_bound_into_the_put(style, acls, private, acl):
    with override_settings(LINK_STYLE=style, STORAGE_OBJECT_ACLS=acls):
        assert privacy.upload_acl(private) == acl


def test_the_public_style_still_refuses_private_datasets():
    with override_settings(LINK_STYLE="public"), pytest.raises(privacy.PrivateDatasetRefused):
        privacy.check_issuance({"id": "ds", "private": True})
