"""Link throughput against the real local CKAN vs a raw ``resource_patch`` loop at the same concurrency.

The link (uploads/services/link.py) adds to CKAN's patch: the claim (a conditional UPDATE), a
HEAD of the object (moto over HTTP), the per-resource lease (conditional UPDATEs before and
after the patch) and the bookkeeping. The baseline is the bare patch, with the same fields,
through the service's CKAN adapter. ``--concurrency`` threads each own one resource (in its own
dataset: CKAN rewrites the whole dataset on a patch); in the link phase each thread links
``--per-thread`` uploads of its resource one after another (each newer than the last, so each
links and supersedes the previous one). Raw and link phases alternate ``--rounds`` times; the
ratio is link throughput / raw throughput; goal >= 0.8 (the issue asks to stay near 0.94x).
The ledger is SQLite by default (``--database-url`` for PostgreSQL).

    .venv/bin/python bench/bench_link.py [--concurrency 4] [--per-thread 25] [--rounds 2] [--quick]

Prints SKIP (for bench/run_all.py) when the local CKAN cannot be started.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import emit, skip  # noqa: E402

GOAL = 0.8
BODY = b"id,value\n1,alpha\n2,beta\n"


class MotoProcess:
    """moto's S3 in its own process, as a real bucket is elsewhere: its work must not share our GIL."""

    def __init__(self) -> None:
        import socket
        import subprocess

        import requests

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.endpoint, timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("moto server did not start") from None
                time.sleep(0.2)

    def client(self, service: str, region: str = "us-east-1") -> Any:
        from tests.support.moto import MotoServer

        return MotoServer.client(self, service, region)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run_threads(work: Callable[[int], None], concurrency: int) -> float:
    """Seconds for ``concurrency`` threads to run ``work(index)`` each."""
    from django.db import connection

    errors: list[BaseException] = []

    def wrapped(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # reported below, after every thread ended
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--per-thread", type=int, default=25, help="links (and raw patches) per thread per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", default="", help="the ledger (default: a fresh SQLite file)")
    parser.add_argument("--quick", action="store_true", help="2 threads, 8 per thread, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.per_thread, args.rounds = 2, 8, 1

    from tests.support.ckan_site import CkanUnavailable, ensure_local_ckan

    try:
        site = ensure_local_ckan()
    except CkanUnavailable as exc:
        skip(f"no local CKAN: {exc}")
        return
    from tests.support.moto import make_storage_world

    moto = MotoProcess()
    try:
        world = make_storage_world(moto, with_queue=False)  # type: ignore[arg-type]
        measure(args, site, moto, world)
    finally:
        moto.stop()


def measure(args: argparse.Namespace, site: Any, moto: MotoProcess, world: Any) -> None:
    from tests.support.ckan_site import make_world

    tmp = tempfile.mkdtemp(prefix="bench-link-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + uuid.uuid4().hex,
            "DATABASE_URL": args.database_url or f"sqlite:///{tmp}/bench.sqlite3",
            "CKAN_URL": site.url,
            "CKAN_API_TOKEN": site.sysadmin_token,
            "CKAN_TIMEOUT_SECONDS": "20",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import override_settings
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    logging.disable(logging.INFO)

    from tests.support.factories import make_upload
    from uploads import ckan, storage
    from uploads.models import Upload, UploadState
    from uploads.services.link import ckan_fields, link_upload

    ckan_world = make_world(site, "bench-link")
    resources = []
    for i in range(args.concurrency):
        dataset = site.create_dataset(ckan_world.org["id"], f"bench-link-{i}")
        resources.append(site.create_resource(dataset["id"], name=f"r{i}.csv")["id"])

    raw_seconds = link_seconds = 0.0
    transient = [0, 0]  # CKAN errors retried: raw, link
    links = patches = 0
    with override_settings(**world.settings()):
        for round_number in range(args.rounds):
            # The uploads this round links, with their objects in the bucket; the raw loop sends the same fields.
            base = timezone.now() + timedelta(minutes=round_number)
            per_thread: list[list[Upload]] = []
            for rid in resources:
                uploads = []
                for j in range(args.per_thread):
                    upload = make_upload(
                        resource_id=rid,
                        bucket=world.bucket,
                        declared_size=len(BODY),
                        state=UploadState.UPLOADED,
                        issued_at=base + timedelta(seconds=j),
                    )
                    world.s3.put_object(Bucket=world.bucket, Key=upload.key, Body=BODY, ContentType="text/csv")
                    uploads.append(upload)
                per_thread.append(uploads)
            sample = per_thread[0][0]
            info = storage.head_object(sample.key)
            assert info is not None
            fields = ckan_fields(sample, info)

            def raw(index: int, fields: dict[str, Any] = fields) -> None:
                for _ in range(args.per_thread):
                    for _try in range(5):  # the shared CKAN resets a kept-alive connection now and then
                        try:
                            ckan.resource_patch(resources[index], fields, token=ckan.service_token())
                            break
                        except ckan.CkanUnavailable:
                            transient[0] += 1

            def link(index: int, uploads: list[list[Upload]] = per_thread) -> None:
                for upload in uploads[index]:
                    outcome = link_upload(upload_id=upload.pk, trigger="event")
                    for _try in range(5):  # the same, seen by the link: it retries (at once, as the sweep would)
                        if outcome != "retry":
                            break
                        transient[1] += 1
                        outcome = link_upload(upload_id=upload.pk, trigger="retry")
                    assert outcome == "linked", outcome

            raw_seconds += run_threads(raw, args.concurrency)
            patches += args.concurrency * args.per_thread
            link_seconds += run_threads(link, args.concurrency)
            links += args.concurrency * args.per_thread
        last = per_thread[-1][-1]
        assert site.resource_show(last.resource_id)["url"] == storage.public_url(last.key)

    raw_rate, link_rate = patches / raw_seconds, links / link_seconds
    print(f"{args.concurrency} threads, {args.per_thread} per thread, {args.rounds} round(s), real CKAN at {site.url}")
    print(f"raw resource_patch: {raw_rate:7.1f}/s   link: {link_rate:7.1f}/s   ratio {link_rate / raw_rate:.2f}")
    print(f"transient CKAN errors retried: raw {transient[0]}, link {transient[1]}")
    emit(
        benchmark="link",
        measure=f"links/s vs raw resource_patch/s, {args.concurrency} threads, real CKAN",
        value=round(link_rate, 2),
        baseline=round(raw_rate, 2),
        unit="per s",
        higher_is_better=True,
        goal_ratio=GOAL,
    )


if __name__ == "__main__":
    main()
