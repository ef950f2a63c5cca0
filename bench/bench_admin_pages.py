"""Render time of the admin's upload list and overview at 1,000,000 uploads in PostgreSQL.

Fills a separate database (ckanrec_bench, created here) with generate_series, first with the
baseline size, times each page, grows it to the full size, times them again, and prints the
absolute medians and the ratio. Needs PostgreSQL (BENCH_ADMIN_PG_URL, default below).

    .venv/bin/python bench/bench_admin_pages.py [--rows 1000000] [--baseline 10000] [--repeat 7] [--quick]

Prints SKIP (for bench/run_all.py) and exits 0 when PostgreSQL cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import emit, skip  # noqa: E402

SERVER_URL = os.environ.get("BENCH_ADMIN_PG_URL", "postgres://ckanrec:ckanrec@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_ADMIN_DB_NAME", "ckanrec_bench")

# One INSERT ... SELECT generate_series: states in realistic proportions, 500 requesters,
# 2,000 datasets in 40 organizations (names and titles as the issuance keeps them), 50,000
# resources, one upload every 15 s going back in time.
FILL_UPLOADS = """
INSERT INTO uploads_upload (
    id, resource_id, package_id, filename, content_type, declared_size, declared_sha256, bucket, key,
    requested_by, requested_by_id, client_address, issued_at, expires_at, object_size, object_etag,
    object_content_type, object_seen_at, state, attempts, next_attempt_at, last_error, linked_at,
    linked_url, updated_at, dataset_private, resource_name, dataset_name, dataset_title, organization_name,
    organization_title, multipart_upload_id, verified_sha256, token_fingerprint, target_kind, target_id,
    target_name, target_title)
SELECT u.id, u.resource_id, 'pkg-' || (u.i %% 2000), 'file-' || u.i || '.csv', 'text/csv', 1000, '',
       'bench', 'resources/api_uploads/' || u.resource_id || '/' || u.id || '/file-' || u.i || '.csv',
       'user-' || (u.i %% 500), '', NULL, u.issued_at, u.issued_at + interval '1 hour',
       CASE WHEN u.state IN ('linked', 'superseded', 'failed', 'uploaded') THEN 1000 END, '', '',
       CASE WHEN u.state IN ('linked', 'superseded', 'failed', 'uploaded') THEN u.issued_at + interval '30 seconds' END,
       u.state,
       CASE WHEN u.state = 'failed' THEN 8 WHEN u.state = 'issued' THEN 0 ELSE 1 END,
       CASE WHEN u.state = 'uploaded' THEN u.issued_at + interval '2 minutes' END,
       CASE WHEN u.state = 'failed' THEN (ARRAY['CKAN answered 403: not authorized to edit the resource',
            'CKAN answered 404: resource not found', 'object size differs from the declared size',
            'CKAN unavailable after 8 attempts'])[1 + u.i %% 4] ELSE '' END,
       CASE WHEN u.state IN ('linked', 'superseded')
            THEN u.issued_at + interval '30 seconds' + (u.i %% 90) * interval '1 second' END,
       CASE WHEN u.state IN ('linked', 'superseded')
            THEN 'https://bench.example/resources/api_uploads/' || u.id ELSE '' END,
       u.issued_at, false, 'Table ' || (u.i %% 50000), 'dataset-' || (u.i %% 2000),
       'Dataset number ' || (u.i %% 2000), 'org-' || (u.i %% 2000 %% 40), 'Organization ' || (u.i %% 2000 %% 40),
       '', '', '', 'resource', u.resource_id, '', ''
FROM (
    SELECT i, md5('upload' || i)::uuid AS id, md5('resource' || (i %% 50000))::uuid::text AS resource_id,
           now() - i * interval '15 seconds' AS issued_at,
           CASE WHEN i %% 100 < 85 THEN 'linked' WHEN i %% 100 < 90 THEN 'superseded'
                WHEN i %% 100 < 93 THEN 'failed' WHEN i %% 100 < 96 THEN 'expired'
                WHEN i %% 100 < 98 THEN 'uploaded' ELSE 'issued' END AS state
    FROM generate_series(%s, %s) AS i
) u
"""
# One event per 10 uploads, one attempt per 10 uploads.
FILL_EVENTS = """
INSERT INTO uploads_storageevent (source, dedupe_key, status, action, event_name, bucket, key, size, etag,
    event_time, sequencer, payload, raw_body, parse_error, upload_id, deliveries, first_received_at,
    last_received_at)
SELECT 'sqs', md5('event' || u.i), CASE WHEN u.i %% 1000 = 0 THEN 'unmatched' ELSE 'matched' END, 'created',
       'ObjectCreated:Put', 'bench', u.key, 1000, '', u.issued_at, '',
       jsonb_build_object('key', u.key), '', '', u.id, 1 + u.i %% 3, u.issued_at, u.issued_at
FROM (SELECT i, md5('upload' || i)::uuid AS id, now() - i * interval '15 seconds' AS issued_at,
             'k/' || i AS key FROM generate_series(%s, %s) AS i WHERE i %% 10 = 0) u
"""
FILL_ATTEMPTS = """
INSERT INTO uploads_linkattempt (upload_id, started_at, finished_at, trigger, triggered_by, outcome, ckan_status, error)
SELECT md5('upload' || i)::uuid, now() - i * interval '15 seconds', now() - i * interval '15 seconds',
       'event', '', CASE WHEN i %% 100 < 90 THEN 'linked' ELSE 'failed' END, 200, ''
FROM generate_series(%s, %s) AS i WHERE i %% 10 = 5
"""


def create_database() -> bool:
    """A fresh bench database; False when PostgreSQL cannot be reached."""
    import psycopg

    try:
        conn = psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        # psycopg's message names host, port and role, never the password.
        reason = str(exc).strip().splitlines()[-1].strip()
        skip(f"PostgreSQL not usable at {SERVER_URL.rsplit('@', 1)[-1]} (set BENCH_ADMIN_PG_URL): {reason}")
        return False
    with conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    return True


def fill(first: int, last: int) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for sql in (FILL_UPLOADS, FILL_EVENTS, FILL_ATTEMPTS):
            cursor.execute(sql, [first, last])
    # Django runs in autocommit, so VACUUM is allowed here; it sets the visibility map, as autovacuum would on a live
    # ledger, so counts can use index-only scans.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def time_pages(client, pages: dict[str, str], repeat: int) -> dict[str, float]:
    """Median milliseconds to render each page (after one warm-up request)."""
    result = {}
    for name, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        result[name] = statistics.median(samples)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--quick", action="store_true", help="5,000 then 50,000 uploads, 3 renders: a check, not a figure"
    )
    args = parser.parse_args()
    if args.quick:
        args.baseline, args.rows, args.repeat = 5_000, 50_000, 3

    if not create_database():
        return
    os.environ["DATABASE_URL"] = f"{SERVER_URL}/{DB_NAME}"
    os.environ["DOTENV_PATH"] = os.devnull
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
    os.environ.setdefault("DJANGO_SECURE_COOKIES", "false")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    settings.STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    setup_test_environment()
    call_command("migrate", verbosity=0)
    user = User.objects.create_superuser("bench", "bench@example.com", "bench-password")
    client = Client()
    client.force_login(user)

    resource = "md5('resource' || 4242)"
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {resource}::uuid::text")
        resource_id = cursor.fetchone()[0]
    pages = {
        "list (first page)": "/admin/uploads/upload/",
        "list filtered (state=failed)": "/admin/uploads/upload/?state__exact=failed",
        "list filtered (requester + 7 days)": "/admin/uploads/upload/?requester=user-42&issued_at__gte="
        + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400)),
        "search (resource id)": f"/admin/uploads/upload/?q={resource_id}",
        "search (file name prefix)": "/admin/uploads/upload/?q=file-4242",
        "search (dataset name prefix)": "/admin/uploads/upload/?q=dataset-1234",
        # 1,111 datasets' names start with it: more than half the ledger, the OR path of the search.
        "search (broad prefix)": "/admin/uploads/upload/?q=dataset-1",
        "list filtered (organization)": "/admin/uploads/upload/?organization=org-7",
        "list filtered (organization + failed)": "/admin/uploads/upload/?organization=org-7&state__exact=failed",
        "list filtered (dataset name)": "/admin/uploads/upload/?dataset_name=dataset-1234",
        "overview": "/admin/",
        "overview (one organization)": "/admin/?organization=org-7",
        "event inbox (unmatched)": "/admin/uploads/storageevent/?status__exact=unmatched",
    }

    print(f"filling {args.baseline:,} uploads ...", flush=True)
    fill_base = fill(1, args.baseline)
    base = time_pages(client, pages, args.repeat)
    print(f"  filled in {fill_base:.1f} s; growing to {args.rows:,} ...", flush=True)
    fill_full = fill(args.baseline + 1, args.rows)
    full = time_pages(client, pages, args.repeat)
    print(f"  filled in {fill_full:.1f} s\n")

    print(f"| page | {args.baseline:,} uploads (ms) | {args.rows:,} uploads (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for name in pages:
        print(f"| {name} | {base[name]:.1f} | {full[name]:.1f} | {full[name] / base[name]:.2f}x |")
    print(f"\nmedian of {args.repeat} renders each, Django test client, PostgreSQL database {DB_NAME}")
    for name in pages:
        emit(
            benchmark="admin pages",
            measure=f"{name}, {args.rows:,} vs {args.baseline:,} uploads",
            value=full[name],
            baseline=base[name],
            unit="ms",
        )


if __name__ == "__main__":
    main()
