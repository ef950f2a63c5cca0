"""0009_stewards from the schema before it (0008_azure_events), with rows: every upload becomes a resource file."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("uploads", "0008_azure_events")]
AFTER = [("uploads", "0009_stewards")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_existing_rows_migrate_as_resources_and_old_failures_are_not_news():
    old_apps = migrate(BEFORE)
    Upload = old_apps.get_model("uploads", "Upload")
    LinkAttempt = old_apps.get_model("uploads", "LinkAttempt")
    now = timezone.now()
    rows = {}
    for state in ("linked", "failed", "issued"):
        resource_id = str(uuid.uuid4())
        rows[state] = Upload.objects.create(
            id=uuid.uuid4(),
            resource_id=resource_id,
            package_id="pkg-1",
            filename=f"{state}.csv",
            content_type="text/csv",
            bucket="b",
            key=f"resources/api_uploads/{resource_id}/{uuid.uuid4()}/{state}.csv",
            issued_at=now - timedelta(days=1),
            expires_at=now,
            state=state,
            last_error="CKAN refused" if state == "failed" else "",
        )
    LinkAttempt.objects.create(upload_id=rows["failed"].pk, trigger="event", outcome="failed", error="x")

    new_apps = migrate(AFTER)
    Upload = new_apps.get_model("uploads", "Upload")
    migrated = {u.state: u for u in Upload.objects.all()}
    assert set(migrated) == {"linked", "failed", "issued"}
    for state, old in rows.items():
        row = migrated[state]
        assert (row.target_kind, row.target_id, row.resource_id) == ("resource", old.resource_id, old.resource_id)
        assert (row.filename, row.key, row.package_id) == (old.filename, old.key, old.package_id)
        assert row.dataset_name == row.organization_name == row.target_name == ""
    # A failure from before notices existed is not sent as news; other states have nothing to send.
    assert migrated["failed"].failure_notified_at is not None
    assert migrated["linked"].failure_notified_at is None
    assert new_apps.get_model("uploads", "LinkAttempt").objects.filter(upload_id=rows["failed"].pk).count() == 1
    Schedule = new_apps.get_model("django_q", "Schedule")
    assert set(Schedule.objects.values_list("name", flat=True)) >= {"uploads: daily prune", "uploads: failure notices"}

    # And back, so the rest of the suite finds the schema it expects.
    migrate(BEFORE)
    migrate(executor_leaf_nodes())


def executor_leaf_nodes():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()
