from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard import overview
from tests.dashboard.conftest import make_upload
from uploads.models import UploadState


def linked(seen_ago: timedelta, latency_seconds: float) -> None:
    now = timezone.now()
    seen = now - seen_ago
    make_upload(
        state=UploadState.LINKED,
        issued_at=seen - timedelta(minutes=1),
        object_seen_at=seen,
        linked_at=seen + timedelta(seconds=latency_seconds),
    )


@pytest.mark.django_db
def test_it_counts_uploads_by_state_with_zeros():
    make_upload(state=UploadState.FAILED)
    make_upload(state=UploadState.FAILED)
    make_upload(state=UploadState.LINKED)
    counts = overview.counts_by_state()
    assert counts["failed"] == 2 and counts["linked"] == 1 and counts["expired"] == 0


@pytest.mark.django_db
def test_the_page_links_every_count_to_its_filtered_list(as_steward):
    make_upload(state=UploadState.FAILED, last_error="CKAN answered 403")
    response = as_steward.get("/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<a class="n" href="/admin/uploads/upload/?state__exact=failed" data-count="failed">1</a>' in html
    assert 'href="/admin/uploads/upload/?state__exact=failed&amp;last_error__startswith=CKAN+answered+403"' in html
    assert 'href="/admin/uploads/storageevent/?status__exact=unmatched"' in html


@pytest.mark.django_db
def test_a_failure_reason_link_leads_to_exactly_those_uploads(as_steward):
    make_upload(state=UploadState.FAILED, last_error="CKAN answered 403", filename="a.csv")
    make_upload(state=UploadState.FAILED, last_error="object not found in bucket", filename="b.csv")
    reasons = overview.top_failure_reasons()
    assert [(r["reason"], r["count"]) for r in reasons] == [
        ("CKAN answered 403", 1),
        ("object not found in bucket", 1),
    ]
    response = as_steward.get(reasons[0]["url"])
    assert [u.filename for u in response.context["cl"].result_list] == ["a.csv"]


@pytest.mark.django_db
def test_it_shows_the_oldest_pending_upload_and_its_age(as_steward):
    make_upload(
        state=UploadState.UPLOADED, issued_at=timezone.now() - timedelta(hours=3, minutes=5), filename="old.csv"
    )
    make_upload(state=UploadState.UPLOADED, issued_at=timezone.now() - timedelta(minutes=5), filename="new.csv")
    data = overview.overview()
    oldest = data["oldest"][0]
    assert oldest["upload"].filename == "old.csv"
    assert oldest["age_text"] == "3 h 5 min"
    assert "3 h 5 min" in as_steward.get("/admin/").content.decode()


@pytest.mark.django_db
def test_the_hourly_series_counts_and_each_bar_links_to_its_hour(as_steward):
    now = timezone.now()
    make_upload(issued_at=now - timedelta(hours=2))
    make_upload(issued_at=now - timedelta(hours=2))
    make_upload(state=UploadState.FAILED, issued_at=now - timedelta(hours=1))
    make_upload(issued_at=now - timedelta(days=9))  # outside the window
    series = {s.name: s for s in overview.hourly_series(now)}
    assert series["issued"].total == 3
    assert series["failed"].total == 1
    assert len(series["issued"].bars) == 7 * 24
    busiest = max(series["issued"].bars, key=lambda bar: bar["count"])
    assert busiest["count"] == 2
    response = as_steward.get(busiest["url"])
    assert len(response.context["cl"].result_list) == 2
    response = as_steward.get(series["issued"].total_url)
    assert len(response.context["cl"].result_list) == 3


@pytest.mark.django_db
def test_link_latency_percentiles_interpolate_between_ranks():
    for seconds in (1, 2, 3, 4, 100):
        linked(timedelta(hours=1), seconds)
    linked(timedelta(days=10), 5000)  # outside the window
    latency = overview.link_latency()
    assert latency["count"] == 5
    assert latency["p50"] == pytest.approx(3.0, abs=0.01)
    assert latency["p95"] == pytest.approx(80.8, abs=0.05)


@pytest.mark.django_db
def test_the_overview_runs_the_same_number_of_queries_for_few_or_many_uploads(as_steward):
    for i in range(3):
        make_upload(state=UploadState.FAILED, last_error=f"reason {i}")
    with CaptureQueriesContext(connection) as few:
        assert as_steward.get("/admin/").status_code == 200
    for i in range(40):
        make_upload(state=UploadState.FAILED, last_error=f"reason {i}")
        linked(timedelta(hours=i % 30 + 1), i)
    with CaptureQueriesContext(connection) as many:
        assert as_steward.get("/admin/").status_code == 200
    assert len(many) == len(few)
    assert len(many) <= 14, [q["sql"] for q in many.captured_queries]


@pytest.mark.django_db
def test_anonymous_is_sent_to_login_and_staff_without_a_role_sees_no_numbers(client, django_user_model):
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(django_user_model.objects.create_user("plain", password="pw", is_staff=True))
    response = client.get("/admin/")
    assert response.status_code == 200
    assert "overview" not in response.context
