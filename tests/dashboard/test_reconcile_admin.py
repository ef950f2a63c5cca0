from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.dashboard.conftest import make_upload
from uploads.models import Discrepancy, DiscrepancyKind, DiscrepancyState, ReconcileRun, RunState, UploadState

RUNS = reverse("admin:uploads_reconcilerun_changelist")
DISCREPANCIES = reverse("admin:uploads_discrepancy_changelist")


@pytest.fixture
def findings(db):
    """A finished run with an expired URL (healable) and an orphan (report only)."""
    run = ReconcileRun.objects.create(
        state=RunState.FINISHED,
        objects_scanned=1234,
        counts={"found": {"expired": 1, "orphan": 1}},
    )
    stale = make_upload(state=UploadState.ISSUED, expires_at=timezone.now() - timedelta(hours=3))
    expired = Discrepancy.objects.create(
        run=run, last_seen_run=run, kind=DiscrepancyKind.EXPIRED, fingerprint="e" * 64, upload=stale, key=stale.key
    )
    orphan = Discrepancy.objects.create(
        run=run,
        last_seen_run=run,
        kind=DiscrepancyKind.ORPHAN,
        fingerprint="o" * 64,
        key="resources/api_uploads/stray.bin",
        object_size=5,
    )
    return run, stale, expired, orphan


def act(client, action, *ids):
    return client.post(DISCREPANCIES, {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True)


def test_runs_list_shows_counts_per_kind_and_the_scan_size(as_steward, findings):
    response = as_steward.get(RUNS)
    assert response.status_code == 200
    body = response.content.decode()
    assert "1234" in body
    assert "Orphan object" in body
    assert f"?last_seen_run__id__exact={findings[0].pk}" in body


def test_discrepancies_filter_by_kind_and_state_and_link_to_upload_and_object(as_steward, findings):
    _, stale, _, _ = findings
    response = as_steward.get(DISCREPANCIES, {"kind__exact": "expired", "state__exact": "open"})
    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("admin:uploads_upload_change", args=[stale.pk]) in body
    assert "stray.bin" not in body
    assert as_steward.get(DISCREPANCIES, {"q": "stray"}).content.decode().count("stray.bin") >= 1


def test_a_steward_sees_no_actions_and_cannot_heal(as_steward, findings):
    _, stale, expired, _ = findings
    response = as_steward.get(DISCREPANCIES)
    assert "heal_selected" not in response.content.decode()
    act(as_steward, "heal_selected", expired.pk)
    expired.refresh_from_db()
    stale.refresh_from_db()
    assert expired.state == DiscrepancyState.OPEN
    assert stale.state == UploadState.ISSUED


def test_an_operator_heals_an_expired_url_and_ignores_an_orphan(as_operator, findings):
    _, stale, expired, orphan = findings
    assert "heal_selected" in as_operator.get(DISCREPANCIES).content.decode()

    response = act(as_operator, "heal_selected", expired.pk)
    assert "marked expired" in response.content.decode()
    expired.refresh_from_db()
    stale.refresh_from_db()
    assert expired.state == DiscrepancyState.HEALED and expired.resolved_by == "otto"
    assert stale.state == UploadState.EXPIRED

    response = act(as_operator, "heal_selected", orphan.pk)
    assert "no automatic heal" in response.content.decode()
    act(as_operator, "ignore_selected", orphan.pk)
    orphan.refresh_from_db()
    assert orphan.state == DiscrepancyState.IGNORED and orphan.resolved_by == "otto"


def test_nobody_edits_or_deletes_discrepancies(as_operator, findings):
    _, _, expired, _ = findings
    page = as_operator.get(reverse("admin:uploads_discrepancy_change", args=[expired.pk]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert as_operator.post(reverse("admin:uploads_discrepancy_delete", args=[expired.pk])).status_code == 403
