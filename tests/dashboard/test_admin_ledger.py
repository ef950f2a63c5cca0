from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.dashboard.conftest import make_upload, queued_links
from uploads.models import (
    EventAction,
    EventSource,
    EventStatus,
    LinkAttempt,
    LinkOutcome,
    LinkTrigger,
    StorageEvent,
    Upload,
    UploadState,
)

LIST = "/admin/uploads/upload/"


def page(upload: Upload) -> str:
    return f"/admin/uploads/upload/{upload.pk}/change/"


def replay_url(upload: Upload) -> str:
    return f"/admin/uploads/upload/{upload.pk}/replay/"


def failed_upload(**fields) -> Upload:
    defaults = {"state": UploadState.FAILED, "attempts": 3, "last_error": "CKAN refused: 403 Forbidden"}
    defaults.update(fields)
    return make_upload(**defaults)


# --- the list ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_uploads_with_a_coloured_state_badge(as_steward):
    make_upload(filename="a.csv", state=UploadState.LINKED)
    failed_upload(filename="b.csv")
    response = as_steward.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-state="linked"' in html and 'data-state="failed"' in html
    assert "a.csv" in html and "b.csv" in html


@pytest.mark.django_db
def test_it_filters_by_state_requester_dataset_and_date(as_steward):
    failed_upload(filename="failed.csv", requested_by="bob", package_id="ds-9")
    make_upload(filename="linked.csv", state=UploadState.LINKED, requested_by="carol")
    make_upload(filename="old.csv", issued_at=timezone.now() - timedelta(days=40))

    def names(query: str) -> set[str]:
        response = as_steward.get(f"{LIST}?{query}")
        assert response.status_code == 200
        return {u.filename for u in response.context["cl"].result_list}

    assert names("state__exact=failed") == {"failed.csv"}
    assert names("requester=carol") == {"linked.csv"}
    assert names("dataset=ds-9") == {"failed.csv"}
    # As the admin's date filter sends it: an aware timestamp (a bare date would be naive).
    since = urlencode({"issued_at__gte": str(timezone.now() - timedelta(days=7))})
    assert names(since) == {"failed.csv", "linked.csv"}


@pytest.mark.django_db
def test_the_requester_filter_keeps_the_other_filters_in_its_form(as_steward):
    response = as_steward.get(f"{LIST}?state__exact=failed&requester=bob")
    html = response.content.decode()
    assert '<input type="hidden" name="state__exact" value="failed">' in html
    assert 'name="requester" value="bob"' in html


@pytest.mark.django_db
def test_it_searches_by_resource_id_key_file_name_and_requester(as_steward):
    target = make_upload(filename="report-2024.csv", requested_by="dora")
    make_upload(filename="other.csv", requested_by="erin")

    def found(term: str) -> list[str]:
        response = as_steward.get(LIST, {"q": term})
        return [u.filename for u in response.context["cl"].result_list]

    assert found(target.resource_id) == ["report-2024.csv"]
    assert found(str(target.pk)) == ["report-2024.csv"]
    assert found(target.key) == ["report-2024.csv"]
    assert found(f"resources/api_uploads/{target.resource_id}/") == ["report-2024.csv"]
    assert found("report-") == ["report-2024.csv"]
    assert found("dora") == ["report-2024.csv"]
    assert found("nobody-matches-this") == []


@pytest.mark.parametrize("narrow_limit", [2_000, 2], ids=["narrow-terms", "broad-terms"])
@pytest.mark.django_db
def test_a_search_term_finds_the_same_uploads_by_field_indexes_or_by_the_or(as_steward, monkeypatch, narrow_limit):
    """Below the limit the ids come from each field's index; above it, the OR: the same uploads, newest first."""
    monkeypatch.setattr("dashboard.admin.ledger.SEARCH_NARROW_LIMIT", narrow_limit)
    now = timezone.now()
    for age, (filename, dataset, requester, state) in enumerate(
        [
            ("sales-1.csv", "budget", "ann", UploadState.FAILED),
            ("sales-2.csv", "budget", "ann", UploadState.ISSUED),
            ("notes.txt", "sales-figures", "bob", UploadState.FAILED),
            ("sales-3.csv", "other", "cy", UploadState.LINKED),
            ("readme.md", "other", "sales", UploadState.FAILED),
            ("unrelated.csv", "other", "dee", UploadState.FAILED),
        ]
    ):
        make_upload(
            filename=filename,
            dataset_name=dataset,
            requested_by=requester,
            state=state,
            issued_at=now - timedelta(minutes=age),
        )

    def found(**params: str) -> list[str]:
        response = as_steward.get(LIST, params)
        assert response.status_code == 200
        return [u.filename for u in response.context["cl"].result_list]

    # File name prefix, dataset name prefix and exact requester, newest first.
    assert found(q="sales") == ["sales-1.csv", "sales-2.csv", "notes.txt", "sales-3.csv", "readme.md"]
    assert found(q="sales", state__exact="failed") == ["sales-1.csv", "notes.txt", "readme.md"]
    assert found(q="budget") == ["sales-1.csv", "sales-2.csv"]
    assert found(q="ann") == ["sales-1.csv", "sales-2.csv"]
    assert found(q="an") == []  # a requester matches whole, not by its start
    assert found(q="zzz") == []


@pytest.mark.django_db
def test_the_list_runs_the_same_number_of_queries_for_5_or_60_uploads(as_steward):
    for _ in range(5):
        failed_upload()
    with CaptureQueriesContext(connection) as few:
        assert as_steward.get(LIST).status_code == 200
    for _ in range(55):
        failed_upload()
    with CaptureQueriesContext(connection) as many:
        assert as_steward.get(LIST).status_code == 200
    assert len(many) == len(few)
    assert len(many) <= 8, [q["sql"] for q in many.captured_queries]
    assert not any("DISTINCT" in q["sql"].upper() for q in many.captured_queries)


@pytest.mark.django_db
def test_the_list_counts_at_most_the_cap_and_says_so(as_steward, monkeypatch):
    monkeypatch.setattr("dashboard.admin.ledger.CheapCountPaginator.CAP", 3)
    for _ in range(5):
        failed_upload()
    html = as_steward.get(f"{LIST}?state__exact=failed").content.decode()
    assert "more than 3" in html


# --- the upload page -----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_shows_the_timeline_and_links_to_the_ckan_resource(as_steward, settings):
    settings.CKAN_URL = "https://ckan.example.org"
    upload = failed_upload(package_id="pkg-7", object_seen_at=timezone.now() - timedelta(minutes=20))
    StorageEvent.objects.create(
        source=EventSource.SQS,
        dedupe_key=uuid.uuid4().hex,
        status=EventStatus.MATCHED,
        action=EventAction.CREATED,
        key=upload.key,
        upload=upload,
        deliveries=3,
    )
    LinkAttempt.objects.create(
        upload=upload,
        trigger=LinkTrigger.EVENT,
        outcome=LinkOutcome.FAILED,
        ckan_status=403,
        error="User not authorized to edit resource",
    )
    response = as_steward.get(page(upload))
    assert response.status_code == 200
    html = response.content.decode()
    kinds = [entry["kind"] for entry in response.context["timeline"]]
    assert kinds[0] == "issued"
    assert set(kinds) >= {"issued", "event", "seen", "attempt"}
    assert "delivered 3 time(s)" in html
    assert "Link attempt (Storage event)" in html and ">403<" in html
    assert "User not authorized to edit resource" in html
    assert f'href="https://ckan.example.org/dataset/pkg-7/resource/{upload.resource_id}"' in html


@pytest.mark.django_db
def test_the_page_is_read_only_even_for_a_superuser(client, superuser):
    client.force_login(superuser)
    upload = failed_upload()
    html = client.get(page(upload)).content.decode()
    assert 'name="_save"' not in html
    response = client.post(page(upload), {"filename": "changed.csv", "state": "linked"})
    assert response.status_code == 403
    upload.refresh_from_db()
    assert (upload.filename, upload.state) == ("data.csv", UploadState.FAILED)
    assert client.get("/admin/uploads/upload/add/").status_code == 403
    assert client.post(f"/admin/uploads/upload/{upload.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Upload.objects.filter(pk=upload.pk).exists()


@pytest.mark.django_db
def test_the_page_never_shows_a_presigned_url(as_steward):
    upload = failed_upload()
    html = as_steward.get(page(upload)).content.decode()
    assert "X-Amz-Signature" not in html and "upload_url" not in html


# --- replay from the page ------------------------------------------------------------------


@pytest.mark.django_db
def test_an_operator_sees_the_replay_button_and_a_steward_does_not(as_operator, client, steward):
    upload = failed_upload()
    assert 'id="replay-button"' in as_operator.get(page(upload)).content.decode()
    client.force_login(steward)
    assert 'id="replay-button"' not in client.get(page(upload)).content.decode()


@pytest.mark.django_db
def test_replay_puts_the_upload_back_and_queues_a_link_by_that_person(as_operator, django_capture_on_commit_callbacks):
    upload = failed_upload()
    with django_capture_on_commit_callbacks(execute=True):
        response = as_operator.post(replay_url(upload))
    assert response.status_code == 302 and response["Location"] == page(upload)
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert upload.attempts == 0
    assert upload.next_attempt_at is not None
    assert upload.last_error == "CKAN refused: 403 Forbidden"  # kept until the next attempt
    assert queued_links() == [(str(upload.pk), "replay", "otto")]


@pytest.mark.django_db
def test_a_forged_replay_post_from_a_steward_is_refused(as_steward, django_capture_on_commit_callbacks):
    upload = failed_upload()
    with django_capture_on_commit_callbacks(execute=True):
        response = as_steward.post(replay_url(upload))
    assert response.status_code == 403
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED
    assert queued_links() == []


@pytest.mark.django_db
def test_replay_refuses_get(as_operator):
    upload = failed_upload()
    assert as_operator.get(replay_url(upload)).status_code == 405
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED


@pytest.mark.django_db
def test_replay_without_a_csrf_token_is_refused(client, operator):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    upload = failed_upload()
    assert strict.post(replay_url(upload)).status_code == 403
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED


@pytest.mark.django_db
def test_replaying_a_linked_upload_does_nothing(as_operator, django_capture_on_commit_callbacks):
    upload = make_upload(state=UploadState.LINKED, linked_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        response = as_operator.post(replay_url(upload), follow=True)
    assert "Not replayed: already linked" in response.content.decode()
    upload.refresh_from_db()
    assert upload.state == UploadState.LINKED
    assert queued_links() == []


@pytest.mark.django_db
def test_anonymous_replay_goes_to_the_login_page(client):
    upload = failed_upload()
    response = client.post(replay_url(upload))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED


# --- bulk replay ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_bulk_replay_asks_for_confirmation_saying_how_many_and_which(as_operator):
    a, b = failed_upload(filename="a.csv"), failed_upload(filename="b.csv")
    linked = make_upload(filename="done.csv", state=UploadState.LINKED)
    response = as_operator.post(
        LIST, {"action": "replay_selected", "_selected_action": [str(a.pk), str(b.pk), str(linked.pk)]}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "2 uploads will be replayed; 1 will be skipped." in html
    assert "a.csv" in html and "b.csv" in html and "skip: already linked" in html
    assert set(Upload.objects.values_list("state", flat=True)) == {UploadState.FAILED, UploadState.LINKED}


@pytest.mark.django_db
def test_bulk_replay_after_confirmation_queues_each_upload(as_operator, django_capture_on_commit_callbacks):
    a, b = failed_upload(), failed_upload()
    with django_capture_on_commit_callbacks(execute=True):
        response = as_operator.post(
            LIST, {"action": "replay_selected", "_selected_action": [str(a.pk), str(b.pk)], "confirm": "yes"}
        )
    assert response.status_code == 302
    assert set(Upload.objects.values_list("state", flat=True)) == {UploadState.UPLOADED}
    assert sorted(queued_links()) == sorted([(str(a.pk), "replay", "otto"), (str(b.pk), "replay", "otto")])


@pytest.mark.django_db
def test_a_steward_has_no_bulk_replay_and_a_forged_one_does_nothing(as_steward, django_capture_on_commit_callbacks):
    upload = failed_upload()
    assert "replay_selected" not in as_steward.get(LIST).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        as_steward.post(LIST, {"action": "replay_selected", "_selected_action": [str(upload.pk)], "confirm": "yes"})
    upload.refresh_from_db()
    assert upload.state == UploadState.FAILED
    assert queued_links() == []


# --- permission matrix ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "list_status", "page_status", "replay_status", "has_button"),
    [
        ("anonymous", 302, 302, 302, False),
        ("steward", 200, 200, 403, False),
        ("operator", 200, 200, 302, True),
        ("superuser", 200, 200, 302, True),
    ],
)
def test_the_permission_matrix(client, roles, who, list_status, page_status, replay_status, has_button):
    from tests.dashboard.conftest import _staff

    users = {
        "steward": lambda: _staff("s", "Data stewards"),
        "operator": lambda: _staff("o", "Operators"),
        "superuser": lambda: _staff("r", superuser=True),
    }
    if who in users:
        client.force_login(users[who]())
    upload = failed_upload()
    assert client.get(LIST).status_code == list_status
    response = client.get(page(upload))
    assert response.status_code == page_status
    assert ('id="replay-button"' in response.content.decode()) is has_button
    assert client.post(replay_url(upload)).status_code == replay_status
    upload.refresh_from_db()
    assert (upload.state == UploadState.UPLOADED) is has_button


@pytest.mark.django_db
def test_staff_without_a_role_cannot_see_the_ledger(client, db):
    from tests.dashboard.conftest import _staff

    client.force_login(_staff("nobody"))
    assert client.get(LIST).status_code == 403
    assert client.get("/admin/uploads/storageevent/").status_code == 403


# --- the event inbox and attempts ----------------------------------------------------------


def make_event(**fields) -> StorageEvent:
    values = {
        "source": EventSource.WEBHOOK,
        "dedupe_key": uuid.uuid4().hex,
        "status": EventStatus.MATCHED,
        "action": EventAction.CREATED,
        "key": "resources/api_uploads/x/y/z.csv",
    }
    values.update(fields)
    return StorageEvent.objects.create(**values)


@pytest.mark.django_db
def test_the_inbox_pretty_prints_the_payload_escaped_and_links_the_upload(as_steward):
    upload = failed_upload()
    event = make_event(upload=upload, payload={"object": {"key": "<script>alert(1)</script>", "size": 8}})
    response = as_steward.get(f"/admin/uploads/storageevent/{event.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "{\n  &quot;object&quot;: {\n    &quot;key&quot;" in html
    assert f'href="/admin/uploads/upload/{upload.pk}/change/"' in html
    assert 'name="_save"' not in html


@pytest.mark.django_db
def test_the_event_list_names_the_file_and_dataset_in_a_constant_number_of_queries(as_steward, settings):
    settings.CKAN_URL = "https://ckan.example"
    make_event(status=EventStatus.UNMATCHED, key="stray.csv")
    upload = failed_upload()
    upload.dataset_name, upload.dataset_title = "water-quality", "Water quality 2026"
    upload.save()
    make_event(upload=upload)
    with CaptureQueriesContext(connection) as few:
        response = as_steward.get("/admin/uploads/storageevent/")
    html = response.content.decode()
    assert '<a href="https://ckan.example/dataset/water-quality" class="ckan-dataset"' in html
    assert "Water quality 2026" in html
    assert f'<td class="field-upload_file">{upload.filename}</td>' in html
    for _ in range(20):
        make_event(upload=failed_upload())
    with CaptureQueriesContext(connection) as many:
        assert as_steward.get("/admin/uploads/storageevent/").status_code == 200
    assert len(many) == len(few)


@pytest.mark.django_db
def test_unmatched_and_unparseable_events_have_their_own_views(as_steward):
    make_event(status=EventStatus.MATCHED, key="matched.csv")
    make_event(status=EventStatus.UNMATCHED, key="stray.csv")
    make_event(status=EventStatus.UNPARSEABLE, action=EventAction.UNKNOWN, key="", raw_body="not json")
    response = as_steward.get("/admin/uploads/storageevent/?status__exact=unmatched")
    assert response.context["title"] == "Unmatched events"
    assert [e.key for e in response.context["cl"].result_list] == ["stray.csv"]
    response = as_steward.get("/admin/uploads/storageevent/?status__exact=unparseable")
    assert response.context["title"] == "Unparseable events"
    assert [e.raw_body for e in response.context["cl"].result_list] == ["not json"]


@pytest.mark.django_db
def test_the_inbox_refuses_edits(as_operator):
    event = make_event()
    assert as_operator.post(f"/admin/uploads/storageevent/{event.pk}/change/", {"key": "x"}).status_code == 403
    assert as_operator.get("/admin/uploads/storageevent/add/").status_code == 403


@pytest.mark.django_db
def test_link_attempts_are_listed_read_only(as_steward):
    upload = failed_upload()
    attempt = LinkAttempt.objects.create(
        upload=upload, trigger=LinkTrigger.REPLAY, triggered_by="otto", outcome=LinkOutcome.LINKED, ckan_status=200
    )
    html = as_steward.get("/admin/uploads/linkattempt/").content.decode()
    assert "otto" in html and 'data-state="linked"' in html
    assert as_steward.post(f"/admin/uploads/linkattempt/{attempt.pk}/change/", {}).status_code == 403


@pytest.mark.django_db
def test_the_page_shows_a_multipart_uploads_plan_and_what_was_verified(as_steward):
    upload = make_upload(
        multipart_upload_id="mpu-123",
        part_size=64 * 1024**2,
        part_count=97,
        declared_size=6 * 1024**3,
        declared_sha256="ab" * 32,
        token_fingerprint="f" * 64,
    )
    html = as_steward.get(page(upload)).content.decode()
    for label, value in (("Part size", "67108864"), ("Part count", "97"), ("Multipart upload id", "mpu-123")):
        assert label in html and value in html
    assert "Verified sha256" in html
    assert "f" * 64 not in html  # the token's fingerprint is not for people
