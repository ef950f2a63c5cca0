"""Issuance overhead: the service's own time per POST /api/v1/uploads vs a bare boto3 presign.

The service runs in this process behind the Django test client (middleware, validation, the
ledger INSERT, the answer), with CKAN answered by a local stub server that replies at once
(resource_patch, package_show, user_show), so the measure is the service's own cost: the wall
time of each request minus the time spent inside its CKAN calls (``uploads.ckan.call_action``,
timed around each call). The baseline, timed interleaved in the same run, is a bare
``generate_presigned_url("put_object")`` with a boto3 client like the service's. Goal: the
service's own time is at most 1 ms above the bare presign (an absolute-difference goal).
A second baseline, timed in the same rounds, is the floor that recording every URL durably
imposes: the bare presign plus one committed INSERT of a row like the service's into the
ledger's table (all its columns and indexes), through a plain cursor in autocommit.

    .venv/bin/python bench/bench_issue.py [--requests 300] [--rounds 3] [--quick] [--profile]
        [--database-url sqlite:////tmp/x.sqlite3 | postgres://...]

``--profile`` prints a cProfile of the requests (cumulative time) and the SQL each request ran
with its time (``connection.execute_wrapper``), to see where the time goes.
The identity of a token is cached (Django's cache): after the first request, each request asks
CKAN twice (the permission probe and the dataset's privacy), not three times.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import emit  # noqa: E402

PACKAGE_ID = "bench-dataset"
TOKEN = "bench-client-token-" + "t" * 40


class FastCkan(BaseHTTPRequestHandler):
    """Answers the three actions issuance calls, at once, as CKAN would shape them."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the service's pooled session expects
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length) or b"{}")
        action = self.path.rsplit("/", 1)[-1]
        if action == "resource_patch":
            result: Any = {"id": data.get("id"), "package_id": PACKAGE_ID, "url": ""}
        elif action == "package_show":
            result = {"id": PACKAGE_ID, "name": PACKAGE_ID, "private": False, "state": "active"}
        elif action == "user_show":
            result = {"id": "bench-user-id", "name": "bench-user"}
        else:
            self.send_error(404)
            return
        body = json.dumps({"success": True, "result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_ckan(port_file: str) -> None:
    """The stub's own process: its work must not take the measured process's GIL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FastCkan)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def start_ckan() -> tuple[str, subprocess.Popen[bytes]]:
    port_file = Path(tempfile.gettempdir()) / f"bench-issue-ckan-{os.getpid()}.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--serve-ckan", str(port_file)])
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("the CKAN stub did not start")
        time.sleep(0.05)
    port = port_file.read_text()
    port_file.unlink()
    return f"http://127.0.0.1:{port}", proc


def configure(database_url: str, ckan_url: str) -> None:
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "DOTENV_PATH": os.devnull,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
            "DJANGO_SECURE_COOKIES": "false",
            "CKAN_URL": ckan_url,
            "CKAN_API_TOKEN": "bench-service-token-" + "s" * 30,
            # Presigning is local computation: the endpoint is never contacted.
            "STORAGE_ENDPOINT_URL": "https://bench-account.r2.cloudflarestorage.com",
            "STORAGE_BUCKET": "bench-bucket",
            "STORAGE_ACCESS_KEY_ID": "bench-access-key",
            "STORAGE_SECRET_ACCESS_KEY": "bench-secret-key-" + "k" * 23,
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        }
    )
    os.environ.pop("REDIS_URL", None)
    import logging

    import django

    django.setup()
    # The service logs one INFO line per issuance; keep it (its cost is part of the service's),
    # but write it nowhere, so the terminal is not the measure.
    for handler in logging.getLogger().handlers:
        handler.setStream(open(os.devnull, "w"))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="issuances per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 requests x 2 rounds: a check, not a figure")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_ISSUE_DATABASE_URL", ""))
    parser.add_argument("--serve-ckan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ckan:
        serve_ckan(args.serve_ckan)
        return
    if args.quick:
        args.requests, args.rounds = 100, 2

    db_path = Path(tempfile.gettempdir()) / f"bench-issue-{os.getpid()}.sqlite3"
    database_url = args.database_url or f"sqlite:///{db_path}"
    ckan_url, stub = start_ckan()
    try:
        measure(args, database_url, db_path, ckan_url)
    finally:
        stub.kill()
        stub.wait()


def measure(args: argparse.Namespace, database_url: str, db_path: Path, ckan_url: str) -> None:
    configure(database_url, ckan_url)

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from uploads import ckan

    setup_test_environment()
    call_command("migrate", verbosity=0)
    if database_url.startswith("sqlite"):
        # The service's other processes keep the file open (see bench_ingest.py).
        import sqlite3

        keep_open = sqlite3.connect(str(db_path))
        keep_open.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opens the WAL index

    in_ckan = [0.0, 0.0]  # wall, CPU of this thread
    real_call = ckan.call_action

    def timed_call(*a: Any, **kw: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return real_call(*a, **kw)
        finally:
            in_ckan[0] += time.perf_counter() - started
            in_ckan[1] += time.thread_time() - cpu

    ckan.call_action = timed_call  # type: ignore[assignment]

    # The WSGI handler gunicorn calls: every middleware, the view, the answer; no test-client bookkeeping.
    app = WSGIHandler()
    body = {"filename": "data.csv", "content_type": "text/csv", "size": 1234}

    def issue_once() -> tuple[float, float]:
        """The service's own milliseconds for one issuance (CKAN's answers taken out): wall, CPU."""
        payload = json.dumps({**body, "resource_id": str(uuid.uuid4())}).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/v1/uploads",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "testserver",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(payload)),
            "HTTP_AUTHORIZATION": TOKEN,
            "wsgi.input": io.BytesIO(payload),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status: list[str] = []
        in_ckan[0] = in_ckan[1] = 0.0
        started, cpu = time.perf_counter(), time.thread_time()
        response = app(environ, lambda s, headers, exc_info=None: status.append(s))
        answer = b"".join(response)
        response.close()  # type: ignore[attr-defined]  # request_finished: what gunicorn does after sending
        total, cpu = time.perf_counter() - started, time.thread_time() - cpu
        assert status[0].startswith("201"), (status, answer)
        return (total - in_ckan[0]) * 1000, (cpu - in_ckan[1]) * 1000

    from uploads.stores import s3 as s3_store

    s3 = s3_store.get_client()  # the bare boto3 client the S3 store signs with
    from django.conf import settings

    def presign_once() -> tuple[float, float]:
        key = f"resources/api_uploads/{uuid.uuid4()}/{uuid.uuid4()}/data.csv"
        params = {"Bucket": settings.STORAGE_BUCKET, "Key": key, "ContentType": "text/csv", "ContentLength": 1234}
        started, cpu = time.perf_counter(), time.thread_time()
        s3.generate_presigned_url("put_object", Params=params, ExpiresIn=3600, HttpMethod="PUT")
        return (time.perf_counter() - started) * 1000, (time.thread_time() - cpu) * 1000

    from django.db import connection

    from uploads.models import Upload

    # The floor a durable record imposes: a bare presign plus one committed INSERT of a row like
    # the service's (every column of the ledger, its indexes), through a plain cursor in autocommit.
    columns = Upload._meta.local_concrete_fields
    sample = Upload(
        resource_id=str(uuid.uuid4()),
        target_id=str(uuid.uuid4()),
        package_id=PACKAGE_ID,
        filename="data.csv",
        content_type="text/csv",
        declared_size=1234,
        bucket=settings.STORAGE_BUCKET,
        requested_by="bench-user",
        requested_by_id="bench-user-id",
        token_fingerprint="f" * 64,
        client_address="127.0.0.1",
        expires_at=timezone.now(),
        dataset_name=PACKAGE_ID,
    )
    row = [f.get_db_prep_save(f.pre_save(sample, True), connection) for f in columns]
    names = [f.name for f in columns]
    insert = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 (names from the model, values bound)
        connection.ops.quote_name(Upload._meta.db_table),
        ", ".join(connection.ops.quote_name(f.column) for f in columns),
        ", ".join(["%s"] * len(columns)),
    )

    def presign_and_insert_once() -> tuple[float, float]:
        upload_id = uuid.uuid4()
        key = f"resources/api_uploads/{uuid.uuid4()}/{upload_id}/data.csv"
        params = {"Bucket": settings.STORAGE_BUCKET, "Key": key, "ContentType": "text/csv", "ContentLength": 1234}
        values = list(row)
        values[names.index("id")] = Upload._meta.pk.get_db_prep_save(upload_id, connection)
        values[names.index("key")] = key
        started, cpu = time.perf_counter(), time.thread_time()
        s3.generate_presigned_url("put_object", Params=params, ExpiresIn=3600, HttpMethod="PUT")
        with connection.cursor() as cursor:
            cursor.execute(insert, values)
        return (time.perf_counter() - started) * 1000, (time.thread_time() - cpu) * 1000

    def presign_after_ckan_once() -> tuple[float, float]:
        """The bare presign right after a CKAN round trip (untimed), as the service's code runs: after a wait."""
        real_call("package_show", {"id": PACKAGE_ID}, token=TOKEN)
        return presign_once()

    def median_of(fn: Callable[[], tuple[float, float]], n: int) -> tuple[float, float]:
        samples = [fn() for _ in range(n)]
        return statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples)

    for _ in range(20):  # warm-up: imports, the first CKAN connection, the identity cache
        issue_once()
        presign_once()

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    own, bare, floor, after_wait = [], [], [], []
    statements: dict[str, list[float]] = {}

    def time_statement(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            entry = statements.setdefault(" ".join(sql.split()[:3]), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    for round_number in range(args.rounds):  # interleaved, so load on the machine hits both alike
        if profiler is not None:
            with connection.execute_wrapper(time_statement):
                own.append(median_of(issue_once, args.requests))
        else:
            own.append(median_of(issue_once, args.requests))
        bare.append(median_of(presign_once, args.requests))
        floor.append(median_of(presign_and_insert_once, args.requests))
        after_wait.append(median_of(presign_after_ckan_once, args.requests))
        print(
            f"  round {round_number + 1}: service {own[-1][0]:.3f} ms (CPU {own[-1][1]:.3f}), "
            f"bare presign {bare[-1][0]:.3f} ms (CPU {bare[-1][1]:.3f}), "
            f"presign + committed INSERT {floor[-1][0]:.3f} ms (CPU {floor[-1][1]:.3f}), "
            f"bare presign after a CKAN call {after_wait[-1][0]:.3f} ms (CPU {after_wait[-1][1]:.3f})",
            flush=True,
        )
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(int(os.environ.get("PROFILE_LINES", "60")))
        issued = args.requests * args.rounds
        print("SQL per request (execute_wrapper; a health check or a commit outside a statement is not seen):")
        for text, (count, seconds) in sorted(statements.items(), key=lambda item: -item[1][1]):
            print(f"  {count / issued:.2f} x {seconds / count * 1000:.3f} ms  {text} ...")
    backend = database_url.split(":")[0]
    warm, cold = statistics.median(b[0] for b in bare), statistics.median(a[0] for a in after_wait)
    print(
        f"the same bare presign right after a CKAN round trip: {cold:.3f} ms vs {warm:.3f} ms in a loop "
        f"({cold / warm:.2f}x): code that runs right after a wait for CKAN runs slower here, "
        "and all of the service's own code runs after such waits"
    )
    for index, kind in ((0, "wall time"), (1, "CPU time of this process")):
        service = statistics.median(o[index] for o in own)
        baseline = statistics.median(b[index] for b in bare)
        durable = statistics.median(f[index] for f in floor)
        print(
            f"issuance ({kind}): the service's own {service:.3f} ms per request (CKAN's answers taken out) vs "
            f"{baseline:.3f} ms for a bare presign: +{service - baseline:.3f} ms; vs {durable:.3f} ms for a bare "
            f"presign plus one committed INSERT of a ledger row (plain cursor): +{service - durable:.3f} ms "
            f"(median of {args.requests} requests, median of {args.rounds} rounds; {backend})"
        )
        emit(
            benchmark="issuance",
            measure=f"{backend}: service's own {kind} per POST /api/v1/uploads (CKAN's calls out) vs bare presign",
            value=service,
            baseline=baseline,
            unit="ms",
            goal_difference=1.0,
        )
        emit(
            benchmark="issuance",
            measure=(
                f"{backend}: service's own {kind} per POST /api/v1/uploads (CKAN's calls out) "
                "vs bare presign + one committed INSERT (the floor of a durable record)"
            ),
            value=service,
            baseline=durable,
            unit="ms",
        )
    if database_url.startswith("sqlite"):
        keep_open.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
