"""Reconciliation throughput and memory over a synthetic listing of >= 1,000,000 keys.

Usage: .venv/bin/python bench/bench_reconcile.py [--keys 1000000 | --quick]

Pages are generated like storage.iter_object_pages would yield them (1,000 keys each) against a
SQLite ledger in a temporary file that holds a linked upload for every key but one in a thousand
(the orphans), grouped 40 per dataset. The baseline, measured in the same run, is the bare cost
of producing the same pages and parsing every key, without touching the ledger. Memory: the
process RSS sampled after every page and chunk of the run (filling the ledger beforehand has its
own peak, so ru_maxrss alone would hide the run's); the Python-heap bound is asserted by
tests/uploads/test_reconcile_memory.py (tracemalloc).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB = Path(tempfile.gettempdir()) / f"bench-reconcile-{os.getpid()}.sqlite3"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ["DOTENV_PATH"] = os.devnull
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.update({"STORAGE_BUCKET": "bench", "CKAN_URL": "", "LOG_LEVEL": "WARNING"})

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from bench.results import emit  # noqa: E402
from tests.support.synthetic_listing import PREFIX, fill_ledger, pages  # noqa: E402
from uploads.services import reconcile  # noqa: E402
from uploads.validation import parse_key  # noqa: E402


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def baseline(n: int) -> float:
    started = time.perf_counter()
    for page in pages(n):
        for obj in page:
            parse_key(PREFIX, obj.key)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 keys: a check that it runs, not a figure")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.keys
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    rows = fill_ledger(0, n, bucket="bench")
    print(f"ledger: {rows:,} linked uploads in {time.perf_counter() - started:.1f} s", flush=True)

    base = baseline(n)
    rss_start = current_rss_mib()
    samples = [rss_start]
    started = time.perf_counter()
    run = reconcile.run_reconcile(
        pages=pages(n), check_ckan=False, progress=lambda phase, done: samples.append(current_rss_mib())
    )
    full = time.perf_counter() - started
    quarter = len(samples) // 4
    assert run.objects_scanned == n and run.counts["found"]["orphan"] == n // 1000
    assert run.counts["found"]["phantom"] == 0 and run.counts["storage_errors"] == 0

    print(f"keys listed:                 {n:,}")
    print(f"baseline (pages + parse):    {base:.2f} s  ({n / base:,.0f} keys/s)")
    print(f"reconcile, both passes:      {full:.2f} s  ({n / full:,.0f} objects/s)")
    print(f"ratio reconcile / baseline:  {full / base:.1f}x")
    print(f"RSS at start of the run:     {rss_start:.0f} MiB")
    print(f"peak RSS during the run:     {max(samples):.0f} MiB (sampled after every page and chunk)")
    print(
        f"peak RSS, first quarter:     {max(samples[:quarter]):.0f} MiB; last quarter {max(samples[-quarter:]):.0f} MiB"
    )
    print(f"process peak (ru_maxrss):    {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    emit(benchmark="reconcile", measure=f"both passes, {n:,} keys", value=full, baseline=base, unit="s")
    emit(benchmark="reconcile", measure="peak RSS vs start of run", value=max(samples), baseline=rss_start, unit="MiB")
    DB.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
