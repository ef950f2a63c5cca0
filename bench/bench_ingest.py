"""Event ingest throughput: signed R2 webhook bodies of 100 events vs a bare bulk_create of the same rows.

Each body holds 100 R2 notifications, 10 of them repeats (5 of an event earlier in the same
body, 5 of one from the previous body), and goes through the whole webhook path (Django test
client: signature, parsing, dedupe, matching, moving uploads, link tasks into the ORM broker
after commit). "matched": the 90 distinct events of a body match issued uploads, which all
move and get a link task each; "unmatched": none does. The baseline, measured interleaved in
the same run on the same database, is ``StorageEvent.objects.bulk_create`` of 100 prebuilt
rows per call (the same fields, payload included). Goal: ingest >= 0.5x the bare insert.
On PostgreSQL the upload table is analyzed after each fill, as autovacuum would on a live database.

    .venv/bin/python bench/bench_ingest.py [--bodies 40] [--rounds 3] [--quick]
        [--backends sqlite,postgresql] [--pg postgres://user:pass@host:5432]

SQLite runs in a temporary file; PostgreSQL in a database of its own (ckanrec_bench_ingest, made
afresh) on the server of ``--pg`` (default BENCH_PG_URL, else postgres://ckanrec:ckanrec@127.0.0.1:5432).
An unreachable PostgreSQL is reported and skipped; SQLite always runs. Log level WARNING (the
per-upload INFO lines would be the output).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import emit, skip  # noqa: E402

DB_NAME = "ckanrec_bench_ingest"
BODY = 100
SECRET = "bench-webhook-secret-0123456789"
BUCKET = "bench"


def pg_server_url(cli: str | None) -> str:
    return cli or os.environ.get("BENCH_PG_URL", "postgres://ckanrec:ckanrec@127.0.0.1:5432")


def fresh_pg_database(server: str) -> str | None:
    """A new empty database on the server; None (and the reason printed) when it cannot be reached."""
    import psycopg

    try:
        conn = psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        # psycopg's message names host, port and role, never the password.
        reason = str(exc).strip().splitlines()[-1].strip()
        print(f"PostgreSQL not usable at {server.rsplit('@', 1)[-1]} (use --pg or BENCH_PG_URL): {reason}")
        return None
    with conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    return f"{server}/{DB_NAME}"


# --- one backend, in its own process ------------------------------------------------------


def notification(key: str) -> dict[str, Any]:
    return {
        "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
        "action": "PutObject",
        "bucket": BUCKET,
        "object": {"key": key, "size": 65536, "eTag": uuid.uuid4().hex},
        "eventTime": "2026-05-24T19:36:44.379Z",
    }


def make_bodies(keys: list[list[str]]) -> list[bytes]:
    """One webhook body per list of 90 keys: 90 events, 5 repeats from this body, 5 from the last."""
    bodies, previous = [], [notification(f"warm/{uuid.uuid4()}") for _ in range(5)]
    for chunk in keys:
        events = [notification(k) for k in chunk]
        body = events + events[:5] + previous[:5]
        previous = events
        bodies.append(json.dumps({"messages": [{"id": str(i), "body": e} for i, e in enumerate(body)]}).encode())
    return bodies


def run_backend(database_url: str, *, bodies: int, rounds: int) -> dict[str, float]:
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "DOTENV_PATH": os.devnull,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
            "DJANGO_SECURE_COOKIES": "false",
            "EVENTS_WEBHOOK_SECRET": SECRET,
            "STORAGE_BUCKET": BUCKET,
            "CKAN_URL": "",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("REDIS_URL", None)  # the ORM broker: link tasks land in the same database
    import django

    django.setup()
    from datetime import timedelta

    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone
    from django_q.models import OrmQ

    from uploads.api_events import signature_for
    from uploads.events import parse_r2_body
    from uploads.models import StorageEvent, Upload

    setup_test_environment()
    call_command("migrate", verbosity=0)
    if connection.vendor == "sqlite":
        # The service's other processes (qcluster, consumers) keep the file open; without them,
        # closing each request's connection (CONN_MAX_AGE 0 on SQLite) would checkpoint the WAL.
        import sqlite3

        other_process = sqlite3.connect(connection.settings_dict["NAME"])
        other_process.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opens the WAL index
    client = Client()
    distinct = BODY - 10

    def issued_keys(n: int) -> list[list[str]]:
        now = timezone.now()
        rows = [
            Upload(
                resource_id=str(uuid.uuid4()),
                filename="f.csv",
                content_type="text/csv",
                bucket=BUCKET,
                key=f"resources/api_uploads/{uuid.uuid4()}/f.csv",
                expires_at=now + timedelta(hours=1),
            )
            for _ in range(n * distinct)
        ]
        Upload.objects.bulk_create(rows, batch_size=500)
        if connection.vendor == "postgresql":
            # Statistics, as autovacuum keeps them on a live database (the CI server runs with
            # autovacuum off). Without any, PostgreSQL takes the wide upload table for one row and
            # its SELECT and UPDATE walk the whole table for each body (measured: see the docs).
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE uploads_upload")
        keys = [u.key for u in rows]
        return [keys[i : i + distinct] for i in range(0, len(keys), distinct)]

    def unmatched_keys(n: int) -> list[list[str]]:
        return [[f"elsewhere/{uuid.uuid4()}.csv" for _ in range(distinct)] for _ in range(n)]

    def post_all(payloads: list[bytes]) -> float:
        started = time.perf_counter()
        for raw in payloads:
            ts = str(int(time.time()))
            response = client.post(
                "/api/v1/events/r2",
                data=raw,
                content_type="application/json",
                HTTP_X_SIGNATURE_TIMESTAMP=ts,
                HTTP_X_SIGNATURE=signature_for(SECRET, ts, raw),
            )
            assert response.status_code == 202, response.content
        return time.perf_counter() - started

    def bare_insert(payloads: list[bytes]) -> float:
        batches = []
        for raw in payloads:
            events = parse_r2_body(json.loads(raw))
            batches.append(
                [
                    StorageEvent(
                        source="webhook",
                        dedupe_key=uuid.uuid4().hex + uuid.uuid4().hex,
                        status="unmatched",
                        action=e.action,
                        event_name=e.event_name,
                        bucket=e.bucket,
                        key=e.key,
                        size=e.size,
                        etag=e.etag,
                        event_time=e.event_time,
                        sequencer=e.sequencer,
                        payload=e.payload,
                    )
                    for e in events
                ]
            )
        started = time.perf_counter()
        for rows in batches:
            StorageEvent.objects.bulk_create(rows)
        return time.perf_counter() - started

    # Warm-up: the first request imports and compiles what the rest reuse.
    post_all(make_bodies(issued_keys(2)))
    bare_insert(make_bodies(unmatched_keys(2)))

    events = bodies * BODY
    totals = {"matched": 0.0, "unmatched": 0.0, "bare": 0.0}
    for round_number in range(rounds):  # interleaved, so load on the machine hits all alike
        matched = make_bodies(issued_keys(bodies))
        unmatched = make_bodies(unmatched_keys(bodies))
        baseline = make_bodies(unmatched_keys(bodies))
        tasks_before = OrmQ.objects.count()
        totals["matched"] += post_all(matched)
        moved = OrmQ.objects.count() - tasks_before
        assert moved == bodies * distinct, (moved, bodies * distinct)  # every matched upload got its link task
        totals["unmatched"] += post_all(unmatched)
        totals["bare"] += bare_insert(baseline)
        print(
            f"  round {round_number + 1}: {events / totals['matched'] * (round_number + 1):,.0f} matched/s so far",
            flush=True,
        )
    rates = {name: events * rounds / seconds for name, seconds in totals.items()}
    rates["statements per body"] = statements_per_body(client, issued_keys(1), connection)
    if connection.vendor == "sqlite":
        other_process.close()
    return rates


def statements_per_body(client: Any, keys: list[list[str]], connection: Any) -> float:
    """SQL statements one matched body costs (its link tasks included)."""
    from django.test.utils import CaptureQueriesContext

    from uploads.api_events import signature_for

    [raw] = make_bodies(keys)
    ts = str(int(time.time()))
    with CaptureQueriesContext(connection) as ctx:
        client.post(
            "/api/v1/events/r2",
            data=raw,
            content_type="application/json",
            HTTP_X_SIGNATURE_TIMESTAMP=ts,
            HTTP_X_SIGNATURE=signature_for(SECRET, ts, raw),
        )
    return float(len(ctx.captured_queries))


# --- the parent: one child per backend ----------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=40, help="bodies of 100 events per round and kind")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 bodies x 2 rounds: a check, not a figure")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", help="PostgreSQL server URL without a database name")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.bodies, args.rounds = 8, 2

    if args.child:
        rates = run_backend(args.child, bodies=args.bodies, rounds=args.rounds)
        print("RATES " + json.dumps(rates), flush=True)
        return

    measured = 0
    for backend in args.backends.split(","):
        if backend == "sqlite":
            path = Path(tempfile.gettempdir()) / f"bench-ingest-{os.getpid()}.sqlite3"
            url: str | None = f"sqlite:///{path}"
        elif backend == "postgresql":
            url = fresh_pg_database(pg_server_url(args.pg))
            path = None  # type: ignore[assignment]
        else:
            parser.error(f"unknown backend {backend!r}")
        if url is None:
            continue
        print(f"{backend}: {args.rounds} rounds of {args.bodies} bodies x {BODY} events per kind", flush=True)
        command = [sys.executable, __file__, "--child", url, "--bodies", str(args.bodies), "--rounds", str(args.rounds)]
        try:
            output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        finally:
            if path is not None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        rates: dict[str, float] = {}
        for line in output.stdout.splitlines():
            if line.startswith("RATES "):
                rates = json.loads(line[len("RATES ") :])
            else:
                print(line, flush=True)
        print(
            f"  {backend}: matched {rates['matched']:,.0f}/s, unmatched {rates['unmatched']:,.0f}/s, "
            f"bare bulk_create {rates['bare']:,.0f}/s; {rates['statements per body']:.0f} statements per body",
            flush=True,
        )
        for kind in ("matched", "unmatched"):
            emit(
                benchmark="ingest",
                measure=f"{backend}: webhook bodies of {BODY}, 10% repeats, {kind} (events/s vs bare bulk_create)",
                value=rates[kind],
                baseline=rates["bare"],
                unit="events/s",
                higher_is_better=True,
                goal_ratio=0.5,
            )
        measured += 1
    if not measured:
        skip("no database backend could be reached")


if __name__ == "__main__":
    main()
