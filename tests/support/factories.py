"""Ledger rows as the services would have left them, for tests that start mid-story."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from uploads.models import Upload, UploadState
from uploads.validation import build_key

PREFIX = "resources/api_uploads/"


def make_upload(
    *,
    resource_id: str | None = None,
    filename: str = "data.csv",
    bucket: str = "bucket",
    raw_key: bool = False,
    **fields: Any,
) -> Upload:
    """An Upload with the service's key layout (``raw_key`` keeps the file name unsanitised in the key)."""
    upload_id = fields.pop("id", None) or uuid.uuid4()
    resource_id = resource_id or str(uuid.uuid4())
    now = timezone.now()
    key = (
        f"{PREFIX}{resource_id}/{upload_id}/{filename}"
        if raw_key
        else build_key(PREFIX, resource_id, upload_id, filename)
    )
    values: dict[str, Any] = {
        "resource_id": resource_id,
        "filename": filename,
        "content_type": "text/csv",
        "bucket": bucket,
        "key": key,
        "issued_at": now,
        "expires_at": now + timedelta(hours=1),
        "state": UploadState.ISSUED,
    }
    values.update(fields)
    return Upload.objects.create(id=upload_id, **values)
