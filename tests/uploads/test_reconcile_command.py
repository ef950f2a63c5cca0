from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from uploads.models import Discrepancy, ReconcileRun


@pytest.mark.django_db
@override_settings(CKAN_URL="")
def test_it_prints_a_summary_table_and_records_the_run(storage_world):
    key = f"resources/api_uploads/{uuid.uuid4()}/{uuid.uuid4()}/stray.csv"
    storage_world.s3.put_object(Bucket=storage_world.bucket, Key=key, Body=b"x")
    out = io.StringIO()
    call_command("reconcile", stdout=out)
    text = out.getvalue()
    assert "Reconciliation" in text
    assert "Orphan object" in text
    assert "1 objects" in text
    run = ReconcileRun.objects.get()
    assert run.triggered_by == "command" and run.counts["found"]["orphan"] == 1
    assert Discrepancy.objects.get().key == key


@pytest.mark.django_db
@override_settings(CKAN_URL="")
def test_a_dry_run_with_delete_orphans_deletes_nothing_and_says_so(storage_world):
    key = f"resources/api_uploads/{uuid.uuid4()}/{uuid.uuid4()}/stray.csv"
    storage_world.s3.put_object(Bucket=storage_world.bucket, Key=key, Body=b"x")
    out = io.StringIO()
    call_command("reconcile", "--delete-orphans", "--older-than", "0", "--dry-run", stdout=out)
    assert "dry run: nothing changed" in out.getvalue()
    assert storage_world.s3.list_objects_v2(Bucket=storage_world.bucket)["KeyCount"] == 1
    assert Discrepancy.objects.count() == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--delete-orphans"], "needs --older-than"),
        (["--older-than", "3"], "only applies with --delete-orphans"),
        (["--delete-orphans", "--older-than", "-1"], "0 or more"),
    ],
)
def test_it_refuses_deletion_options_that_do_not_make_sense(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("reconcile", *args, stdout=io.StringIO())
