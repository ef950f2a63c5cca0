"""The Cloudflare Worker in worker/, run for real in workerd (Miniflare, from worker/package-lock.json),
against the service started here (gunicorn, as `serve` runs it), moto and the real local CKAN.

Each test writes a scenario for worker/test/drive.mjs, which loads the Worker as wrangler.toml
configures it, puts R2 notifications on its queue and prints what the Worker did as JSON lines.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from django_q.models import OrmQ

from dashboard.management.commands.serve import gunicorn_command
from tests.dashboard.test_serve_command import free_port
from tests.integration.test_end_to_end import CSV, assert_ckan_shows, r2_notification
from tests.support.factories import make_upload
from tests.support.pipeline import qcluster, upload_as_editor, world_environ
from tests.support.processes import ROOT, child_environ, stop_process_group, wait_for
from tests.support.tcp_proxy import TcpProxy
from uploads.api_events import signature_for
from uploads.models import EventSource, EventStatus, StorageEvent, Upload, UploadState

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKER_DIR = ROOT / "worker"
SECRET = "worker-test-webhook-secret"


# --- the service ------------------------------------------------------------------------------


@contextmanager
def reconciler(env: dict[str, str], log_path: Path, *, port: int | None = None) -> Iterator[str]:
    """The web service under gunicorn on a free port (or ``port``); yields its base URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            gunicorn_command(f"127.0.0.1:{port}", workers=1),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def answers() -> bool:
                try:
                    return requests.get(f"{url}/healthz", timeout=5).status_code in (200, 503)
                except requests.RequestException:
                    return proc.poll() is not None  # died: fail below with its log

            wait_for(answers, timeout=60, what="gunicorn to answer")
            assert proc.poll() is None, f"gunicorn exited:\n{log_path.read_text(errors='replace')[-4000:]}"
            yield url
        finally:
            stop_process_group(proc, signal.SIGTERM)


def service_env(**overrides: str) -> dict[str, str]:
    return child_environ(**{"EVENTS_WEBHOOK_SECRET": SECRET, **overrides})


# --- the Worker -------------------------------------------------------------------------------


@dataclass
class WorkerRun:
    lines: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] = field(default_factory=dict)
    returncode: int | None = None

    def outcomes(self, outcome: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("worker") and line["outcome"] == outcome]


def run_worker(
    node: str,
    tmp_path: Path,
    *,
    reconciler_url: str,
    messages: list[dict[str, Any]],
    secret: str = SECRET,
    settle: int | None = None,
    max_retries: int | None = None,
    on_line: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = 60,
) -> WorkerRun:
    """Run worker/test/drive.mjs on one scenario; fast retries (1 s, 2 s, ...) unless it says otherwise."""
    scenario: dict[str, Any] = {
        "reconcilerUrl": reconciler_url,
        "secret": secret,
        "vars": {"RETRY_BASE_SECONDS": "1", "RETRY_MAX_SECONDS": "4", "REQUEST_TIMEOUT_SECONDS": "10"},
        "messages": messages,
        "settle": len(messages) if settle is None else settle,
        "timeoutSeconds": timeout,
    }
    if max_retries is not None:
        scenario["consumer"] = {"maxRetries": max_retries}
    path = tmp_path / f"scenario-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(scenario))
    run = WorkerRun()
    stderr_path = path.with_suffix(".stderr")
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [node, "test/drive.mjs", str(path)], cwd=WORKER_DIR, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            assert proc.stdout is not None
            for text in proc.stdout:
                line = json.loads(text)
                if line.get("driver") == "done":
                    run.done = line
                else:
                    run.lines.append(line)
                if on_line:
                    on_line(line)
            run.returncode = proc.wait(timeout=timeout + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert run.done, f"the driver ended without a result:\n{stderr_path.read_text(errors='replace')[-4000:]}"
    return run


def notification_for(upload: Upload, size: int = 8, etag: str = "e5ebd4c02cefbe7955977c67ada242b7") -> dict:
    """An R2 event notification, as R2 puts it on the queue, for an upload's key."""
    return {
        "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
        "action": "PutObject",
        "bucket": upload.bucket,
        "object": {"key": upload.key, "size": size, "eTag": etag},
        "eventTime": "2026-12-03T10:00:00.000Z",
    }


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.ckan
def test_a_queued_r2_notification_ends_as_a_linked_upload(
    worker_node, client, storage_world, ckan_world, ckan_settings, tmp_path
):
    env = world_environ(storage_world, ckan_settings, EVENTS_WEBHOOK_SECRET=SECRET)
    issued = upload_as_editor(client, ckan_world, filename="worker push.csv", data=CSV)

    with reconciler(env, tmp_path / "gunicorn.log") as url, qcluster(env, tmp_path / "qcluster.log"):
        run = run_worker(
            worker_node, tmp_path, reconciler_url=url, messages=[r2_notification(storage_world, issued, len(CSV))]
        )
        assert run.returncode == 0, run.lines
        [acked] = run.outcomes("ack")
        assert (acked["status"], acked["attempts"]) == (202, 1)
        assert_ckan_shows(ckan_world, issued["upload_id"], CSV)

    event = StorageEvent.objects.get(key=issued["key"])
    assert (event.source, event.status, event.deliveries) == (EventSource.WEBHOOK, EventStatus.MATCHED, 1)


def test_one_unreadable_message_is_dead_lettered_and_the_rest_of_its_batch_recorded(worker_node, tmp_path):
    first, second = make_upload(bucket="ckan-uploads"), make_upload(bucket="ckan-uploads")
    unreadable = {"action": "RenameObject", "bucket": "ckan-uploads", "object": {"key": "x"}}

    with reconciler(service_env(), tmp_path / "gunicorn.log") as url:
        run = run_worker(
            worker_node,
            tmp_path,
            reconciler_url=url,
            messages=[notification_for(first), unreadable, notification_for(second)],
        )

    assert run.returncode == 0, run.lines
    # The batch was refused whole (400), then each message posted alone.
    assert [line["status"] for line in run.outcomes("ack")] == [202, 202]
    [dead] = run.outcomes("dead-letter")
    assert (dead["status"], dead["code"]) == (400, "unreadable")
    assert run.done["deadLettered"] == [unreadable]  # in the dead letter queue, body intact
    assert run.outcomes("retry") == []
    assert set(StorageEvent.objects.values_list("key", flat=True)) == {first.key, second.key}
    for upload in (first, second):
        upload.refresh_from_db()
        assert upload.state == UploadState.UPLOADED
    # The service queued their links (django-q's ORM broker, in the database the tests share).
    assert sorted(q.task["args"][0] for q in OrmQ.objects.all()) == sorted([str(first.id), str(second.id)])


def test_a_stopped_service_means_redelivery_with_delay_and_nothing_lost(worker_node, tmp_path):
    upload = make_upload(bucket="ckan-uploads")
    with reconciler(service_env(), tmp_path / "gunicorn.log") as url:
        proxy = TcpProxy(url).start()
        proxy.stop()  # the service is unreachable at the Worker's URL (connection refused)
        retried = threading.Event()

        def on_line(line: dict[str, Any]) -> None:
            if line.get("outcome") == "retry" and not retried.is_set():
                retried.set()
                proxy.start()  # the service is back, on the same port

        try:
            run = run_worker(
                worker_node, tmp_path, reconciler_url=proxy.url, messages=[notification_for(upload)], on_line=on_line
            )
        finally:
            proxy.stop()

    assert run.returncode == 0, run.lines
    [first_try] = run.outcomes("retry")
    assert (first_try["reason"], first_try["attempts"], first_try["delaySeconds"]) == ("unreachable", 1, 1)
    [acked] = run.outcomes("ack")
    assert (acked["status"], acked["attempts"], acked["id"]) == (202, 2, first_try["id"])
    event = StorageEvent.objects.get()
    assert (event.key, event.status, event.deliveries) == (upload.key, EventStatus.MATCHED, 1)


def test_a_service_answering_503_gets_retries_then_the_dead_letter_queue_keeps_the_message(worker_node, tmp_path):
    upload = make_upload(bucket="ckan-uploads")
    message = notification_for(upload)
    # No EVENTS_WEBHOOK_SECRET: the service refuses every push with 503 not_configured.
    with reconciler(service_env(EVENTS_WEBHOOK_SECRET=""), tmp_path / "gunicorn.log") as url:
        run = run_worker(worker_node, tmp_path, reconciler_url=url, messages=[message], max_retries=2)

    assert run.returncode == 0, run.lines
    retries = run.outcomes("retry")
    assert [(r["status"], r["code"], r["attempts"], r["delaySeconds"]) for r in retries] == [
        (503, "not_configured", 1, 1),
        (503, "not_configured", 2, 2),
        (503, "not_configured", 3, 4),
    ]
    assert run.outcomes("ack") == []
    assert run.done["deadLettered"] == [message]  # not lost: the queue moved it after max_retries
    assert not StorageEvent.objects.exists()


def test_the_signature_the_worker_makes_is_the_one_the_service_checks(worker_node, tmp_path):
    received: list[tuple[dict[str, str], bytes]] = []

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"received": 1, "duplicates": 0, "unmatched": 0}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    message = {**notification_for(make_upload(bucket="b")), "object": {"key": "ünï code/a b+c.csv", "size": 3}}
    try:
        run = run_worker(
            worker_node, tmp_path, reconciler_url=f"http://127.0.0.1:{server.server_port}", messages=[message]
        )
    finally:
        server.shutdown()

    assert run.returncode == 0, run.lines
    [(headers, body)] = received
    [acked] = run.outcomes("ack")
    assert json.loads(body) == {"messages": [{"id": acked["id"], "body": message}]}
    assert headers["content-type"] == "application/json"
    timestamp = headers["x-signature-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    assert headers["x-signature"] == signature_for(SECRET, timestamp, body)
    assert SECRET not in json.dumps(run.lines)


def test_a_wrong_secret_is_refused_nothing_is_recorded_and_the_message_is_kept(worker_node, tmp_path):
    upload = make_upload(bucket="ckan-uploads")
    message = notification_for(upload)
    with reconciler(service_env(), tmp_path / "gunicorn.log") as url:
        run = run_worker(
            worker_node, tmp_path, reconciler_url=url, messages=[message], secret="not-the-secret", max_retries=1
        )

    assert run.returncode == 0, run.lines
    assert [(r["status"], r["code"]) for r in run.outcomes("retry")] == [(401, "bad_signature")] * 2
    assert run.outcomes("ack") == []
    assert run.done["deadLettered"] == [message]
    assert not StorageEvent.objects.exists()
    upload.refresh_from_db()
    assert upload.state == UploadState.ISSUED


def test_wrangler_builds_the_worker_with_its_queue_and_vars_and_no_secret_in_the_file(worker_node, tmp_path):
    wrangler = WORKER_DIR / "node_modules" / ".bin" / "wrangler"
    done = subprocess.run(
        [str(wrangler), "deploy", "--dry-run", "--outdir", str(tmp_path / "dist")],
        cwd=WORKER_DIR,
        env={**child_environ(), "WRANGLER_SEND_METRICS": "false", "CI": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "DEAD_LETTER_QUEUE: ckan-upload-events-dlq" in output
    assert 'RECONCILER_URL: "https://reconciler.example.org"' in output
    assert (tmp_path / "dist" / "index.js").is_file()
    config = (WORKER_DIR / "wrangler.toml").read_text()
    assert 'dead_letter_queue = "ckan-upload-events-dlq"' in config
    assert "EVENTS_WEBHOOK_SECRET =" not in config  # a secret binding (wrangler secret put), never a var
