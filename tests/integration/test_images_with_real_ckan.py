"""Organization and group images end to end: the API, a moto bucket over HTTP, the real local CKAN."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests
from django.test import override_settings

from tests.support.ckan_site import CkanSite, CkanUser, _slug
from uploads.models import LinkTrigger, TargetKind, Upload, UploadState
from uploads.services.link import link_upload

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db]

# A real 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
# Fields CKAN derives from image_url: the only ones allowed to change.
IMAGE_FIELDS = {"image_url", "image_display_url"}


class Members:
    def __init__(self, site: CkanSite, kind: str) -> None:
        self.kind = kind
        self.site = site
        if kind == "organization":
            self.target = site.create_org(f"img-{kind}")
        else:
            name = _slug("img-group")
            self.target = site.action("group_create", name=name, title=f"Test group {name}", description="Kept")
        self.admin = site.create_user(f"{kind}-admin")
        self.editor = site.create_user(f"{kind}-editor")
        self.member = site.create_user(f"{kind}-member")
        self.outsider = site.create_user(f"{kind}-outsider")
        for user, role in ((self.admin, "admin"), (self.editor, "editor"), (self.member, "member")):
            site.action(f"{kind}_member_create", id=self.target["id"], username=user.name, role=role)

    def show(self) -> dict[str, Any]:
        """The organization or group as CKAN shows it, but for its members' ``last_active``.

        CKAN stamps a user's ``last_active`` on every request that user's token makes (the
        caller of the probe included); that is the user's record, not the organization's.
        """
        shown = self.site.action(f"{self.kind}_show", id=self.target["id"])
        for user in shown.get("users", []):
            user.pop("last_active", None)
        return shown


def ask(client, kind: str, target: str, user: CkanUser | None, **body: Any):
    values = {"filename": "logo.png", "content_type": "image/png", "size": len(PNG), **body}
    headers = {"HTTP_AUTHORIZATION": user.token} if user else {}
    return client.post(
        f"/api/v1/{'organizations' if kind == 'organization' else 'groups'}/{target}/image",
        data=json.dumps(values),
        content_type="application/json",
        **headers,
    )


@pytest.fixture(params=["organization", "group"])
def members(request, ckan_site) -> Members:
    return Members(ckan_site, request.param)


def test_an_image_is_uploaded_linked_as_image_url_and_nothing_else_changes(
    client, storage_world, ckan_settings, members
):
    before = members.show()
    # By name: the ledger keeps the id.
    response = ask(client, members.kind, members.target["name"], members.admin)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["method"] == "PUT" and body["upload_url"]
    assert members.show() == before  # the permission probe wrote nothing

    upload = Upload.objects.get(pk=body["upload_id"])
    assert (upload.target_kind, upload.target_id, upload.resource_id) == (members.kind, members.target["id"], "")
    assert (upload.target_name, upload.target_title) == (members.target["name"], members.target["title"])

    put = requests.put(body["upload_url"], data=PNG, headers=body["headers"], timeout=10)
    assert put.status_code == 200
    done = client.post(f"/api/v1/uploads/{upload.pk}/complete", HTTP_AUTHORIZATION=members.admin.token)
    assert done.status_code == 202, done.content
    assert link_upload(upload_id=upload.pk, trigger=LinkTrigger.COMPLETE) == "linked"

    upload.refresh_from_db()
    assert upload.state == UploadState.LINKED
    after = members.show()
    assert after["image_url"] == upload.linked_url
    stored = storage_world.s3.get_object(Bucket=storage_world.bucket, Key=upload.key)
    assert (stored["Body"].read(), stored["ContentType"]) == (PNG, "image/png")
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= IMAGE_FIELDS, {k: (before.get(k), after.get(k)) for k in changed}
    # Members (and their roles) are still there.
    roles = {u["name"]: u["capacity"] for u in after.get("users", [])}
    assert roles.get(members.admin.name) == "admin" and roles.get(members.member.name) == "member"

    status = client.get(f"/api/v1/uploads/{upload.pk}", HTTP_AUTHORIZATION=members.admin.token).json()
    assert (status["state"], status["target_kind"], status["target_id"]) == (
        "linked",
        members.kind,
        members.target["id"],
    )


def test_only_those_who_may_update_it_get_a_url(client, storage_world, ckan_settings, members):
    before = members.show()
    # CKAN's rule for organization_update / group_update: a sysadmin or an admin of it.
    sysadmin = CkanUser(name="ckan_admin", id="", token=members.site.sysadmin_token)
    assert ask(client, members.kind, members.target["id"], sysadmin).status_code == 201
    assert ask(client, members.kind, members.target["id"], members.admin).status_code == 201
    for user in (members.editor, members.member, members.outsider):
        refused = ask(client, members.kind, members.target["id"], user)
        assert refused.status_code == 403, (user.name, refused.content)
        assert refused.json()["error"]["code"] == "forbidden"
    assert ask(client, members.kind, members.target["id"], None).status_code == 401
    assert ask(client, members.kind, f"no-such-{uuid.uuid4().hex[:8]}", members.admin).status_code == 404
    assert Upload.objects.count() == 2
    assert members.show() == before


def test_svg_and_non_images_and_too_large_files_are_refused(client, storage_world, ckan_settings, members):
    target = members.target["id"]
    svg = ask(client, members.kind, target, members.admin, filename="logo.svg", content_type="image/svg+xml")
    assert svg.status_code == 400 and svg.json()["error"]["fields"].keys() == {"content_type"}
    disguised = ask(client, members.kind, target, members.admin, filename="logo.svg", content_type="image/png")
    assert disguised.status_code == 400 and disguised.json()["error"]["fields"].keys() == {"filename"}
    csv = ask(client, members.kind, target, members.admin, filename="a.csv", content_type="text/csv")
    assert csv.status_code == 400 and csv.json()["error"]["fields"].keys() == {"content_type"}
    big = ask(client, members.kind, target, members.admin, size=5 * 1024 * 1024 + 1)
    assert big.status_code == 400 and big.json()["error"]["fields"].keys() == {"size"}
    with override_settings(IMAGE_MAX_SIZE=10 * 1024 * 1024):
        assert ask(client, members.kind, target, members.admin, size=5 * 1024 * 1024 + 1).status_code == 201
    assert Upload.objects.count() == 1


def test_the_newest_image_wins_per_target(client, storage_world, ckan_settings, members):
    uploads = []
    for name in ("first.png", "second.png"):
        body = ask(client, members.kind, members.target["id"], members.admin, filename=name).json()
        assert requests.put(body["upload_url"], data=PNG, headers=body["headers"], timeout=10).status_code == 200
        uploads.append(Upload.objects.get(pk=body["upload_id"]))
    Upload.objects.filter(pk__in=[u.pk for u in uploads]).update(state=UploadState.UPLOADED)
    # The newer one links first; the older one, arriving late, must not overwrite it.
    assert link_upload(upload_id=uploads[1].pk, trigger=LinkTrigger.EVENT) == "linked"
    assert link_upload(upload_id=uploads[0].pk, trigger=LinkTrigger.EVENT) == "superseded"
    assert members.show()["image_url"] == Upload.objects.get(pk=uploads[1].pk).linked_url
    assert TargetKind(Upload.objects.get(pk=uploads[0].pk).target_kind) == members.kind


def linked_image(client, members: Members, filename: str = "logo.png") -> Upload:
    body = ask(client, members.kind, members.target["id"], members.admin, filename=filename).json()
    assert requests.put(body["upload_url"], data=PNG, headers=body["headers"], timeout=10).status_code == 200
    Upload.objects.filter(pk=body["upload_id"]).update(state=UploadState.UPLOADED)
    return Upload.objects.get(pk=body["upload_id"])


def test_a_refused_image_link_fails_and_a_replay_links_it(client, storage_world, ckan_settings, members):
    from uploads.services.replay import replay_uploads

    upload = linked_image(client, members)
    # A service token that may not update the target: CKAN answers 403, a permanent failure.
    with override_settings(CKAN_API_TOKEN=members.editor.token):
        assert link_upload(upload_id=upload.pk, trigger=LinkTrigger.EVENT) == "failed"
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED and "CKAN refused the link" in upload.last_error
    assert not members.show().get("image_url")

    result = replay_uploads(upload_ids=[upload.pk], by="otto")
    assert result.replayed == [upload.pk]
    assert Upload.objects.get(pk=upload.pk).state == UploadState.UPLOADED
    assert link_upload(upload_id=upload.pk, trigger=LinkTrigger.REPLAY, triggered_by="otto") == "linked"
    assert members.show()["image_url"] == Upload.objects.get(pk=upload.pk).linked_url


def test_reconcile_finds_an_image_changed_in_ckan_and_fix_puts_it_back(client, storage_world, ckan_settings, members):
    from uploads.models import Discrepancy, DiscrepancyKind
    from uploads.services.reconcile import run_reconcile

    upload = linked_image(client, members)
    assert link_upload(upload_id=upload.pk, trigger=LinkTrigger.EVENT) == "linked"
    upload.refresh_from_db()
    clean = run_reconcile()
    assert not Discrepancy.objects.filter(run=clean, kind=DiscrepancyKind.DRIFT).exists()

    members.site.action(f"{members.kind}_patch", id=members.target["id"], image_url="https://elsewhere.example/x.png")
    run = run_reconcile(fix=True, triggered_by="test")
    drift = Discrepancy.objects.get(run=run, kind=DiscrepancyKind.DRIFT, upload=upload)
    assert drift.detail["reason"] == "image_url"
    assert drift.detail["ckan_image_url"] == "https://elsewhere.example/x.png"
    assert drift.state == "healed"
    assert members.show()["image_url"] == upload.linked_url
