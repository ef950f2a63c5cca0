"""A synthetic bucket listing and its ledger, for the reconcile memory test and benchmark.

Every listed key has a linked upload except one in a thousand (an orphan); four uploads share a
resource and forty a dataset.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from uploads.models import Upload, UploadState
from uploads.storage import ObjectInfo

PREFIX = "resources/api_uploads/"
PAGE = 1000
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def key_of(i: int) -> tuple[str, uuid.UUID]:
    """The i-th key of the listing and the upload id inside it."""
    upload_id = uuid.UUID(int=(i << 64) | 0xABCDEF)
    return f"{PREFIX}{uuid.UUID(int=i // 4)}/{upload_id}/file-{i}.csv", upload_id


def pages(n: int) -> Iterator[list[ObjectInfo]]:
    """Pages of n keys as storage.iter_object_pages yields them, built on the fly."""
    for start in range(0, n, PAGE):
        yield [ObjectInfo(key_of(i)[0], 1024, "0" * 32, WHEN) for i in range(start, min(n, start + PAGE))]


def fill_ledger(start: int, stop: int, *, bucket: str = "b", batch: int = 20_000) -> int:
    """Insert the linked uploads of keys [start, stop), skipping the orphans; return how many."""
    rows: list[Upload] = []
    total = 0
    for i in range(start, stop):
        if i % 1000 == 999:
            continue
        key, upload_id = key_of(i)
        rows.append(
            Upload(
                id=upload_id,
                resource_id=str(uuid.UUID(int=i // 4)),
                package_id=f"dataset-{i // 40:07d}",
                filename=f"file-{i}.csv",
                content_type="text/csv",
                bucket=bucket,
                key=key,
                expires_at=WHEN + timedelta(hours=1),
                state=UploadState.LINKED,
                object_size=1024,
            )
        )
        if len(rows) == batch:
            Upload.objects.bulk_create(rows, batch_size=5000)
            total += len(rows)
            rows = []
    Upload.objects.bulk_create(rows, batch_size=5000)
    return total + len(rows)
