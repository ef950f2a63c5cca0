"""The comparison core keeps memory flat however long the listing is."""

from __future__ import annotations

import tracemalloc

import pytest
from django.test import override_settings

from tests.support.synthetic_listing import PREFIX, fill_ledger, pages
from uploads.services import reconcile

# Stated bound: the comparison's Python heap peaks under 4 MiB, whatever the listing length
# (measured: 1.86 MiB over 50,000 keys, 1.86 MiB over 200,000).
PEAK_BOUND_BYTES = 4 * 1024 * 1024


def peak_of(n: int) -> tuple[int, reconcile.ReconcileRun]:
    tracemalloc.start()
    try:
        run = reconcile.run_reconcile(pages=pages(n), check_ckan=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, run


@pytest.mark.django_db
@override_settings(STORAGE_KEY_PREFIX=PREFIX, STORAGE_BUCKET="b", CKAN_URL="")
def test_peak_memory_of_the_comparison_stays_flat_from_50k_to_200k_keys():
    fill_ledger(0, 50_000)
    small_peak, small = peak_of(50_000)
    fill_ledger(50_000, 200_000)
    large_peak, large = peak_of(200_000)

    print(f"tracemalloc peak: 50,000 keys {small_peak / 2**20:.2f} MiB, 200,000 keys {large_peak / 2**20:.2f} MiB")
    assert small.objects_scanned == 50_000
    assert large.objects_scanned == 200_000
    assert large.uploads_checked == 2 * 199_800  # matched in the listing, then linked in the ledger pass
    assert large.counts["found"]["orphan"] == 200
    assert large.counts["found"]["phantom"] == 0  # every linked upload was listed
    assert large_peak < PEAK_BOUND_BYTES, f"peak {large_peak / 2**20:.1f} MiB"
    # Four times the keys, not four times the memory: allow noise, not growth.
    assert large_peak < small_peak * 1.5 + 2 * 2**20, (small_peak, large_peak)
