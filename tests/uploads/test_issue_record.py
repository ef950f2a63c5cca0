"""The ledger row an issuance records (one precompiled INSERT) is the row ``save()`` would write."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from uploads import storage
from uploads.models import TargetKind, Upload, UploadState
from uploads.services.issue import _record_upload
from uploads.services.owner import token_fingerprint

TOKEN = "a-client-token"

COMPARED = [f.attname for f in Upload._meta.local_concrete_fields if f.attname not in {"id", "key", "updated_at"}]


def ledger_fields(now: datetime, **overrides: object) -> dict[str, object]:
    upload_id = uuid.uuid4()
    fields: dict[str, object] = {
        "id": upload_id,
        "resource_id": "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab",
        "target_id": "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab",
        "package_id": "rain",
        "filename": "Rain Fall.csv",
        "content_type": "text/csv",
        "declared_size": 8,
        "declared_sha256": "",
        "bucket": storage.bucket_name(),
        "key": f"resources/api_uploads/r/{upload_id}/rain.csv",
        "requested_by": "alice",
        "requested_by_id": "u-1",
        "token_fingerprint": token_fingerprint(TOKEN),
        "client_address": "192.0.2.7",
        "issued_at": now,
        "expires_at": now + timedelta(hours=1),
        "dataset_name": "rain",
        "dataset_private": True,
    }
    fields.update(overrides)
    return fields


def stored(pk: uuid.UUID) -> dict[str, object]:
    row = Upload.objects.filter(pk=pk).values(*COMPARED).get()
    return dict(row)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"multipart_upload_id": "mp-1", "part_size": 5 * 1024**2, "part_count": 3, "declared_size": 15 * 1024**2},
        {"target_kind": TargetKind.ORGANIZATION, "resource_id": "", "target_name": "met", "client_address": None},
    ],
    ids=["single-put", "multipart", "image"],
)
def test_it_records_the_row_save_would_record_and_commits_it(overrides):
    now = timezone.now()
    mine, reference = ledger_fields(now, **overrides), ledger_fields(now, **overrides)
    # The bucket and the token's fingerprint are _record_upload's to fill in, from the token.
    del mine["bucket"], mine["token_fingerprint"]
    recorded = _record_upload(client_token=TOKEN, **mine)
    Upload.objects.create(**reference)

    assert not connection.in_atomic_block  # committed on its own, as a web request records it
    assert stored(recorded.pk) == stored(reference["id"])  # type: ignore[arg-type]
    fresh = Upload.objects.get(pk=recorded.pk)
    assert fresh.state == UploadState.ISSUED and fresh.attempts == 0
    assert fresh.updated_at is not None
    assert recorded._state.adding is False and recorded._state.db == "default"
