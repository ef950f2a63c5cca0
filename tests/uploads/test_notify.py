"""Failure notices over a real SMTP server (aiosmtpd) and a real local HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.test import override_settings
from django.utils import timezone

from tests.support.factories import make_upload
from tests.support.processes import free_port
from uploads.models import FailureDigest, LinkTrigger, Upload, UploadState
from uploads.services.link import link_upload
from uploads.services.notify import send_failure_digest

pytestmark = pytest.mark.django_db

SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJzZWNyZXQtdG9rZW4ifQ.c2lnbmF0dXJlLXNlY3JldA"


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content)
        message["X-Rcpt"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    posts: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            posts.append({"content_type": self.headers["Content-Type"], "body": json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/chat-secret-part", posts
    finally:
        server.shutdown()
        server.server_close()


def notify_settings(smtp_port: int, webhook_url: str, **extra: Any) -> override_settings:
    values: dict[str, Any] = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": smtp_port,
        "NOTIFY_EMAILS": ["stewards@example.org", "ops@example.org"],
        "NOTIFY_WEBHOOK_URL": webhook_url,
        "NOTIFY_ADMIN_BASE_URL": "https://uploads.example.org",
        "NOTIFY_DIGEST_MINUTES": 15,
    }
    return override_settings(**{**values, **extra})


@pytest.fixture
def smtp_port() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def failed(n: int, **fields: Any) -> list[Upload]:
    fields.setdefault("last_error", "CKAN refused the link: Access denied")
    return [
        make_upload(
            state=UploadState.FAILED,
            filename=f"table-{i}.csv",
            package_id="pkg-1",
            dataset_name="river-levels",
            dataset_title="River levels",
            organization_title="Water Board",
            **fields,
        )
        for i in range(n)
    ]


def test_a_failed_link_sends_one_mail_and_one_webhook_post(storage_world, smtp_port, receiver):
    port, inbox = smtp_port
    url, posts = receiver
    upload = make_upload(
        state=UploadState.UPLOADED,
        bucket=storage_world.bucket,
        filename="levels.csv",
        package_id="pkg-1",
        dataset_title="River levels",
        dataset_name="river-levels",
        organization_title="Water Board",
    )
    with notify_settings(port, url, LINK_MAX_ATTEMPTS=1):
        # The object was never PUT: the only attempt gives up, a real failure of the link service.
        assert link_upload(upload_id=upload.pk, trigger=LinkTrigger.RETRY) == "failed"
        upload.refresh_from_db()
        assert upload.state == UploadState.FAILED and upload.failure_notified_at is None
        result = send_failure_digest()
    assert result.sent and result.emailed and result.webhook_posted and result.uploads == 1

    assert len(inbox.messages) == 1
    mail = inbox.messages[0]
    assert mail["X-Rcpt"] == "stewards@example.org, ops@example.org"
    assert mail["Subject"] == "[CKAN uploads] upload failed: levels.csv (River levels)"
    body = mail.get_payload(decode=True).decode()
    assert "levels.csv in River levels (Water Board)" in body
    assert "reason: object not found in bucket (gave up after 1 attempts)" in body
    assert f"https://uploads.example.org/admin/uploads/upload/{upload.pk}/change/" in body

    assert len(posts) == 1
    assert posts[0]["content_type"] == "application/json"
    payload = posts[0]["body"]
    assert payload["count"] == 1
    assert payload["failures"][0]["file"] == "levels.csv"
    assert payload["failures"][0]["dataset"] == "River levels"
    assert payload["failures"][0]["admin_url"].endswith(f"/admin/uploads/upload/{upload.pk}/change/")
    assert "levels.csv" in payload["text"]

    upload.refresh_from_db()
    assert upload.failure_notified_at is not None
    assert FailureDigest.objects.count() == 1


def test_fifty_failures_in_a_period_send_one_digest(smtp_port, receiver):
    port, inbox = smtp_port
    url, posts = receiver
    now = timezone.now()
    with notify_settings(port, url):
        failed(50)
        first = send_failure_digest(now=now)
        # More failures inside the period wait for the next one; nothing new is not news.
        failed(3)
        assert not send_failure_digest(now=now + timedelta(minutes=5)).sent
        later = send_failure_digest(now=now + timedelta(minutes=16))
        assert not send_failure_digest(now=now + timedelta(minutes=40)).sent
    assert first.sent and first.uploads == 50
    assert later.sent and later.uploads == 3
    assert len(inbox.messages) == 2 and len(posts) == 2
    assert inbox.messages[0]["Subject"] == "[CKAN uploads] 50 uploads failed"
    assert inbox.messages[0].get_payload(decode=True).decode().count("reason: ") == 50
    assert posts[0]["body"]["count"] == 50 and len(posts[0]["body"]["failures"]) == 50
    assert inbox.messages[1]["Subject"] == "[CKAN uploads] 3 uploads failed"


def test_no_token_or_presigned_url_reaches_a_notice(smtp_port, receiver):
    port, inbox = smtp_port
    url, posts = receiver
    presigned = "https://bucket.example/k?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeefcafe"
    failed(1, last_error=f"CKAN said Authorization: {SECRET_TOKEN} was refused for {presigned}")
    with notify_settings(port, url):
        assert send_failure_digest().sent
    mail_text = inbox.messages[0].as_string()
    post_text = json.dumps(posts[0]["body"])
    for text in (mail_text, post_text):
        assert SECRET_TOKEN not in text
        assert "deadbeefcafe" not in text and "AKIAEXAMPLE" not in text
        assert "[redacted]" in text


def test_when_every_channel_fails_the_uploads_wait_for_the_next_run(receiver):
    url, posts = receiver
    dead_port = free_port()  # nothing listens there
    uploads = failed(2)
    with notify_settings(dead_port, url.replace(url.split("/")[2], f"127.0.0.1:{free_port()}")):
        result = send_failure_digest()
    assert not result.sent and len(result.errors) == 2
    assert all("chat-secret-part" not in error for error in result.errors)
    assert Upload.objects.filter(pk__in=[u.pk for u in uploads], failure_notified_at__isnull=True).count() == 2
    assert FailureDigest.objects.count() == 0
    with notify_settings(dead_port, url, NOTIFY_EMAILS=[]):
        assert send_failure_digest().sent
    assert posts[0]["body"]["count"] == 2


def test_nothing_is_sent_without_channels():
    failed(1)
    with override_settings(NOTIFY_EMAILS=[], NOTIFY_WEBHOOK_URL=""):
        result = send_failure_digest()
    assert not result.sent and "configured" in result.reason
