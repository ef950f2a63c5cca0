"""What the public bucket may serve: active types refused, or stored as attachments when allowed."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.test import override_settings

from tests.uploads import test_api_uploads
from tests.uploads.test_api_uploads import RESOURCE_ID, ckan_action, post_upload
from uploads.content_policy import ATTACHMENT, ckan_format, decide
from uploads.models import Upload
from uploads.validation import InvalidInput

fake_ckan = test_api_uploads.fake_ckan


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "text/html; charset=utf-8",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "application/rss+xml",
        "application/javascript",
        "text/javascript",
        "application/x-msdownload",
        "application/vnd.microsoft.portable-executable",
        "unknown/unknown",
    ],
)
def test_it_refuses_active_types_by_default_naming_the_content_type(content_type):
    with pytest.raises(InvalidInput) as exc:
        decide(content_type, "file.bin", allowed_active=[])
    assert exc.value.field == "content_type"


@pytest.mark.parametrize("filename", ["page.html", "PAGE.HTM", "logo.svg", "app.js", "setup.exe", "run.bat"])
def test_it_refuses_an_active_extension_whatever_type_is_declared(filename):
    with pytest.raises(InvalidInput) as exc:
        decide("text/plain", filename, allowed_active=[])
    assert exc.value.field == "filename"


def test_it_accepts_passive_files_without_a_disposition():
    decision = decide("text/csv; charset=utf-8", "data.csv", allowed_active=[])
    assert (decision.media_type, decision.active, decision.content_disposition) == ("text/csv", False, "")


def test_an_allowed_active_type_is_stored_as_an_attachment():
    assert decide("text/html", "report.html", allowed_active=["text/html"]).content_disposition == ATTACHMENT
    assert decide("application/octet-stream", "report.html", allowed_active=["text/html"]).content_disposition == (
        ATTACHMENT
    )
    with pytest.raises(InvalidInput):
        decide("image/svg+xml", "logo.svg", allowed_active=["text/html"])


def test_the_policy_reads_the_operators_setting():
    with override_settings(UPLOAD_ALLOWED_ACTIVE_TYPES=["image/svg+xml"]):
        assert decide("image/svg+xml", "logo.svg").active
    with override_settings(UPLOAD_ALLOWED_ACTIVE_TYPES=[]), pytest.raises(InvalidInput):
        decide("image/svg+xml", "logo.svg")


@pytest.mark.parametrize(
    ("content_type", "filename", "expected"),
    [
        ("text/csv", "report.csv", "CSV"),
        ("text/html", "page", "HTML"),
        ("application/json; charset=utf-8", "export", "JSON"),
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "sheet", "XLSX"),
        ("application/x-made-up", "export", ""),
        ("application/x-made-up", "name.with-a-dash", ""),
        ("text/csv", "name.averyveryverylongextension", "CSV"),
    ],
)
def test_the_ckan_format_is_an_extension_or_a_known_name_never_a_mime(content_type, filename, expected):
    assert ckan_format(content_type, filename) == expected


@pytest.mark.django_db
def test_the_api_refuses_html_with_a_400_naming_the_field_and_records_nothing(client, storage_world, fake_ckan):
    response = post_upload(
        client, {"resource_id": RESOURCE_ID, "filename": "page.html", "content_type": "text/html", "size": 5}
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["content_type"]
    assert Upload.objects.count() == 0


@pytest.mark.django_db
def test_a_new_resource_is_not_created_in_ckan_for_a_refused_file(client, storage_world, fake_ckan):
    created = fake_ckan.post(ckan_action("resource_create"), json={"success": True, "result": {"id": RESOURCE_ID}})
    response = client.post(
        "/api/v1/resources",
        data={"package_id": "pkg", "name": "Logo", "filename": "logo.svg", "content_type": "image/svg+xml"},
        content_type="application/json",
        HTTP_AUTHORIZATION="client-token-abc",
    )
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["content_type"]
    assert created.call_count == 0


@pytest.mark.integration
@pytest.mark.django_db
def test_an_allowed_html_file_is_served_by_the_bucket_as_an_attachment(client, storage_world, fake_ckan):
    html = b"<script>alert(document.domain)</script>"
    with override_settings(UPLOAD_ALLOWED_ACTIVE_TYPES=["text/html"]):
        response = post_upload(
            client,
            {"resource_id": RESOURCE_ID, "filename": "page.html", "content_type": "text/html", "size": len(html)},
        )
    assert response.status_code == 201, response.content
    issued = response.json()
    assert issued["headers"]["Content-Disposition"] == "attachment"
    signed = parse_qs(urlparse(issued["upload_url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert "content-disposition" in signed

    put = requests.put(issued["upload_url"], data=html, headers=issued["headers"], timeout=10)
    assert put.status_code == 200, put.text
    # The bucket as the public sees it: anonymous reads allowed, like an R2 public domain.
    storage_world.s3.put_bucket_policy(
        Bucket=storage_world.bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{storage_world.bucket}/*",
                    }
                ],
            }
        ),
    )
    served = requests.get(f"{storage_world.endpoint}/{storage_world.bucket}/{issued['key']}", timeout=10)
    assert served.status_code == 200
    assert served.content == html
    assert served.headers["Content-Type"] == "text/html"
    assert served.headers["Content-Disposition"] == "attachment"
