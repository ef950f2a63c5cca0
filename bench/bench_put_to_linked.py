"""PUT -> linked, end to end, with the ORM broker and with Redis: p50/p95/max against the link step alone.

    .venv/bin/python bench/bench_put_to_linked.py                  # 200 uploads per broker
    .venv/bin/python bench/bench_put_to_linked.py --quick          # 30 per broker (make bench BENCH_ARGS=--quick)
    .venv/bin/python bench/bench_put_to_linked.py --database-url postgres://ckanrec:ckanrec@127.0.0.1:5432/ckanrec_drill

Real parts, as processes (tests/support/live_service.py): a moto S3+SQS server (the bucket's
event notifications go straight to the queue), the web app under gunicorn, ``run_qcluster``
(2 workers) and ``consume_sqs --wait-seconds 1``, the real local CKAN. For each broker a fresh
database (a SQLite file by default; a PostgreSQL URL is dropped and created afresh) and, for
Redis, a flushed DB (``--redis-url``, default redis://127.0.0.1:6379/5).

Uploads arrive at ``--rate`` per second (default 1: below what two link workers do against the
local CKAN, so that the figure is latency, not a backlog) from 4 client threads, one upload per CKAN resource (so
none is superseded): issue -> PUT, no ``complete`` (the storage event is the trigger). The value is
the time from the PUT returning to ``linked_at`` in the ledger; the baseline from the same run is
the link step alone: each upload's LinkAttempt (claim, HEAD, ``resource_patch``, commit).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import emit, skip  # noqa: E402
from tests.support.ckan_site import CkanSite, CkanUnavailable, ensure_local_ckan  # noqa: E402
from tests.support.live_service import ApiClient, LiveService, make_resources  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    args: argparse.Namespace, site: CkanSite, token: str, resources: list[str], broker: str, work: Path
) -> dict[str, list[float]]:
    """One broker: the uploads, then PUT -> linked and link-step durations in seconds."""
    database_url = args.database_url or f"sqlite:///{work / f'{broker}.sqlite3'}"
    service = LiveService(
        work=work / broker,
        database_url=database_url,
        ckan_url=site.url,
        ckan_token=site.sysadmin_token,
        redis_url=args.redis_url if broker == "redis" else "",
        extra_env={"LOG_LEVEL": "WARNING"},
    )
    try:
        service.start()
        import os

        os.environ.update(service.django_environ())
        import django
        from django.db import connections

        django.setup()
        connections.close_all()  # the previous broker's database, if any
        from django.conf import settings

        settings.DATABASES["default"].update(_database(database_url))
        from uploads.models import LinkAttempt, Upload

        put_at: dict[str, float] = {}
        lock = threading.Lock()
        clients = [ApiClient(service.web_url, token) for _ in range(4)]
        t0 = time.monotonic()

        def upload(n: int, resource_id: str) -> None:
            time.sleep(max(0.0, t0 + n / args.rate - time.monotonic()))
            api = clients[n % len(clients)]
            data = f"n,broker\n{n},{broker}\n".encode()
            issued = api.issue(resource_id, filename=f"p2l-{n}.csv", data=data)
            api.put(issued, data)
            with lock:
                put_at[str(issued["upload_id"])] = time.time()

        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(upload, range(len(resources)), resources))
        achieved = len(put_at) / (max(put_at.values()) - min(put_at.values()) or 1)
        deadline = time.monotonic() + 300
        while Upload.objects.filter(state="linked").count() < len(put_at):
            if time.monotonic() > deadline:
                states = Counter(Upload.objects.values_list("state", flat=True))
                raise RuntimeError(f"not every upload linked within 300 s: {states}")
            time.sleep(0.5)
        linked = dict(Upload.objects.filter(state="linked").values_list("pk", "linked_at"))
        latencies = [at.timestamp() - put_at[str(pk)] for pk, at in linked.items() if at is not None]
        steps = [
            (a.finished_at - a.started_at).total_seconds()
            for a in LinkAttempt.objects.filter(outcome="linked").only("started_at", "finished_at")
            if a.finished_at is not None
        ]
        connections.close_all()
        return {"put_to_linked": latencies, "link_step": steps, "rate": [achieved]}
    finally:
        service.close()


def _database(url: str) -> dict[str, Any]:
    import dj_database_url

    return dict(dj_database_url.parse(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=200, help="uploads per broker (default 200)")
    parser.add_argument("--quick", action="store_true", help="30 uploads per broker")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="uploads per second asked for (default 1; the clients may not keep up)"
    )
    parser.add_argument("--brokers", default="orm,redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--database-url", help="default: a SQLite file per broker in a temp dir")
    args = parser.parse_args()
    if args.quick:
        args.uploads = 30
    try:
        site = ensure_local_ckan()
    except CkanUnavailable as exc:
        skip(f"no local CKAN: {exc}")
        return
    brokers = args.brokers.split(",")
    if "redis" in brokers:
        import redis

        try:
            redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            print(f"Redis at {args.redis_url} unreachable ({exc}): measuring the ORM broker only", flush=True)
            brokers.remove("redis")
    if not brokers:
        skip("no broker to measure")
        return
    # The same resources for each broker (each broker gets a fresh ledger): one upload per resource.
    token, originals = make_resources(site, args.uploads, "bench-p2l")
    resources = list(originals)
    work = Path(tempfile.mkdtemp(prefix="bench-put-to-linked-"))
    for broker in brokers:
        got = measure(args, site, token, resources, broker, work)
        lat, steps = got["put_to_linked"], got["link_step"]
        ms = [1000 * v for v in lat]
        step_ms = [1000 * v for v in steps]
        print(
            f"{broker}: {len(ms)} uploads (asked {args.rate:g}/s, PUTs came at {got['rate'][0]:.1f}/s): "
            f"PUT -> linked p50 {percentile(ms, 0.5):.0f} ms, "
            f"p95 {percentile(ms, 0.95):.0f} ms, max {max(ms):.0f} ms; link step alone p50 "
            f"{percentile(step_ms, 0.5):.0f} ms, p95 {percentile(step_ms, 0.95):.0f} ms, max {max(step_ms):.0f} ms",
            flush=True,
        )
        for name, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0)):
            emit(
                benchmark="put_to_linked",
                measure=f"PUT -> linked {name}, {broker}, {len(ms)} uploads at {args.rate:g}/s vs link step {name}",
                value=round(percentile(ms, q), 1),
                baseline=round(percentile(step_ms, q), 1),
                unit="ms",
            )


if __name__ == "__main__":
    main()
