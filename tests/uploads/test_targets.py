"""Per-target-kind rules in unit tests (CKAN faked with `responses`; the real CKAN is in tests/integration)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import responses
from django.test import override_settings
from django.utils import timezone

from tests.support.factories import make_upload
from tests.uploads.test_api_uploads import CKAN, ckan_action
from uploads import ckan
from uploads.models import TargetKind, Upload, UploadState
from uploads.services import targets
from uploads.services.sweep import enqueue_due_links

pytestmark = pytest.mark.django_db
ORG_ID = "5a5a5a5a-1111-4222-8333-444455556666"


def image(kind: str = TargetKind.ORGANIZATION, target_id: str = ORG_ID, **fields) -> Upload:
    return make_upload(resource_id="", target_kind=kind, target_id=target_id, filename="logo.png", **fields)


def test_siblings_are_per_kind_and_id():
    org = image()
    same_org = image()
    group_same_id = image(TargetKind.GROUP)
    resource = make_upload(resource_id=ORG_ID)  # a resource with the same id string is another target
    siblings = set(Upload.objects.filter(targets.target_of(org.pk)).values_list("pk", flat=True))
    assert siblings == {org.pk, same_org.pk}
    assert set(Upload.objects.filter(targets.target_of(resource.pk)).values_list("pk", flat=True)) == {resource.pk}
    assert set(Upload.objects.filter(targets.target_of(group_same_id.pk)).values_list("pk", flat=True)) == {
        group_same_id.pk
    }


@pytest.mark.parametrize("kind", [TargetKind.ORGANIZATION, TargetKind.GROUP])
def test_an_image_patch_sends_only_its_image_url(kind):
    upload = image(kind)
    with (
        override_settings(CKAN_URL=CKAN, CKAN_API_TOKEN="service-token-xyz"),
        responses.RequestsMock() as mock,
    ):
        call = mock.post(ckan_action(f"{kind}_patch"), json={"success": True, "result": {"id": ORG_ID}})
        targets.patch(upload, info=None)  # type: ignore[arg-type]  (an image patch reads nothing of it)
    sent = json.loads(call.calls[0].request.body)
    assert sent.keys() == {"id", "image_url"} and sent["id"] == ORG_ID
    assert sent["image_url"].endswith(upload.key)
    assert call.calls[0].request.headers["Authorization"] == "service-token-xyz"


def test_the_permission_probe_reads_a_409_as_allowed_and_a_403_as_refused():
    with override_settings(CKAN_URL=CKAN), responses.RequestsMock() as mock:
        mock.post(ckan_action("organization_show"), json={"success": True, "result": {"id": ORG_ID, "name": "o"}})
        mock.post(
            ckan_action("organization_patch"),
            status=409,
            json={"success": False, "error": {"__type": "Validation Error", "name": ["Missing value"]}},
        )
        assert ckan.authorize_group_update("organization", "o", token="t")["id"] == ORG_ID
        probe = json.loads(mock.calls[1].request.body)
        assert probe == {"id": ORG_ID, "name": ""}
        mock.replace(
            responses.POST,
            ckan_action("organization_patch"),
            status=403,
            json={"success": False, "error": {"__type": "Authorization Error", "message": "Access denied"}},
        )
        with pytest.raises(ckan.CkanNotAuthorized):
            ckan.authorize_group_update("organization", "o", token="t")


def test_the_sweep_retries_an_image_like_a_resource_file(enqueued, django_capture_on_commit_callbacks):
    now = timezone.now()
    due = image(state=UploadState.UPLOADED, next_attempt_at=now - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert enqueue_due_links(now=now) == 1
    assert enqueued == [(str(due.pk), "retry")]
