"""Failure notices: one digest per period naming the uploads that ended ``failed``.

The ledger is the queue: an upload that ends failed has ``failure_notified_at`` empty (the link
service clears it), and ``send_failure_digest`` (every minute, from a schedule) sends one notice
when there is something new and the last digest is at least NOTIFY_DIGEST_MINUTES old, so a
CKAN outage that fails a thousand uploads sends one mail, not a thousand.

Rows are claimed (a conditional UPDATE setting ``failure_notified_at``) before anything is sent,
no transaction stays open while the mail server or the webhook is called, and when every
configured channel fails the claim is undone so the next run tries again. A notice names the
dataset, the file, the reason and the admin link; never a token or a presigned URL (the reason
goes through the log redaction, and neither is stored on an upload).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone

from uploads.logfilters import redact
from uploads.models import FailureDigest, Upload, UploadState

log = logging.getLogger(__name__)

REASON_MAX_CHARS = 300
# A mail lists this many uploads; the rest are counted (the admin link shows them all).
MAIL_LISTED = 100


@dataclass(frozen=True)
class Failure:
    upload_id: str
    dataset: str
    organization: str
    file: str
    reason: str
    failed_at: datetime
    admin_url: str

    def as_dict(self) -> dict[str, str]:
        return {
            "upload_id": self.upload_id,
            "dataset": self.dataset,
            "organization": self.organization,
            "file": self.file,
            "reason": self.reason,
            "failed_at": self.failed_at.isoformat(),
            "admin_url": self.admin_url,
        }


@dataclass
class DigestResult:
    sent: bool
    uploads: int = 0
    reason: str = ""
    emailed: bool = False
    webhook_posted: bool = False
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "uploads": self.uploads,
            "reason": self.reason,
            "emailed": self.emailed,
            "webhook_posted": self.webhook_posted,
            "errors": self.errors,
        }


def channels_configured() -> bool:
    return bool(settings.NOTIFY_EMAILS or settings.NOTIFY_WEBHOOK_URL)


def admin_url(path: str) -> str:
    return f"{settings.NOTIFY_ADMIN_BASE_URL}{path}"


def describe(upload: Upload) -> Failure:
    reason = redact(upload.last_error or "failed")
    if len(reason) > REASON_MAX_CHARS:
        reason = reason[: REASON_MAX_CHARS - 1] + "…"
    return Failure(
        upload_id=str(upload.pk),
        dataset=upload.dataset_title or upload.dataset_name or upload.package_id or "(unknown dataset)",
        organization=upload.organization_title or upload.organization_name,
        file=upload.filename,
        reason=reason,
        failed_at=upload.updated_at,
        admin_url=admin_url(reverse("admin:uploads_upload_change", args=[upload.pk])),
    )


def _claim(now: datetime) -> list[Upload]:
    pending = Upload.objects.filter(state=UploadState.FAILED, failure_notified_at__isnull=True)
    ids = list(pending.order_by("updated_at").values_list("pk", flat=True)[: settings.NOTIFY_DIGEST_MAX_UPLOADS])
    if not ids:
        return []
    # Conditional: of two runs at once, each upload goes into one digest only.
    pending.filter(pk__in=ids).update(failure_notified_at=now)
    return list(
        Upload.objects.filter(pk__in=ids, failure_notified_at=now)
        .only(
            "id",
            "filename",
            "package_id",
            "dataset_name",
            "dataset_title",
            "organization_name",
            "organization_title",
            "last_error",
            "updated_at",
        )
        .order_by("updated_at")
    )


def _subject(failures: list[Failure]) -> str:
    if len(failures) == 1:
        return f"{settings.EMAIL_SUBJECT_PREFIX}upload failed: {failures[0].file} ({failures[0].dataset})"
    return f"{settings.EMAIL_SUBJECT_PREFIX}{len(failures)} uploads failed"


def _text(failures: list[Failure], *, listed: int) -> str:
    lines = [f"{len(failures)} upload(s) ended failed and will not be retried without a replay.", ""]
    for failure in failures[:listed]:
        where = f"{failure.dataset} ({failure.organization})" if failure.organization else failure.dataset
        lines += [f"- {failure.file} in {where}", f"  reason: {failure.reason}", f"  {failure.admin_url}"]
    if len(failures) > listed:
        lines.append(f"... and {len(failures) - listed} more.")
    failed_list = admin_url(reverse("admin:uploads_upload_changelist") + "?state__exact=failed")
    lines += ["", f"All failed uploads: {failed_list}"]
    return "\n".join(lines)


def _send_email(failures: list[Failure]) -> None:
    send_mail(
        _subject(failures),
        _text(failures, listed=MAIL_LISTED),
        settings.DEFAULT_FROM_EMAIL,
        settings.NOTIFY_EMAILS,
        fail_silently=False,
    )


def _post_webhook(failures: list[Failure]) -> None:
    body = {
        # "text" is what Slack, Mattermost and Rocket.Chat incoming webhooks display.
        "text": _text(failures, listed=20),
        "count": len(failures),
        "failures": [failure.as_dict() for failure in failures],
    }
    response = requests.post(settings.NOTIFY_WEBHOOK_URL, json=body, timeout=settings.NOTIFY_TIMEOUT_SECONDS)
    response.raise_for_status()


def send_failure_digest(*, now: datetime | None = None) -> DigestResult:
    """Send one digest of the uploads that failed since the last one, if the period allows."""
    now = now or timezone.now()
    if not channels_configured():
        return DigestResult(sent=False, reason="no NOTIFY_EMAILS or NOTIFY_WEBHOOK_URL configured")
    last = FailureDigest.objects.order_by("-sent_at").values_list("sent_at", flat=True).first()
    if last is not None and last > now - timedelta(minutes=settings.NOTIFY_DIGEST_MINUTES):
        return DigestResult(sent=False, reason="a digest was sent less than NOTIFY_DIGEST_MINUTES ago")
    uploads = _claim(now)
    if not uploads:
        return DigestResult(sent=False, reason="no new failures")
    failures = [describe(upload) for upload in uploads]
    result = DigestResult(sent=False, uploads=len(failures))
    if settings.NOTIFY_EMAILS:
        try:
            _send_email(failures)
            result.emailed = True
        except Exception as exc:  # smtplib and socket errors have no common base worth naming
            result.errors.append(f"email: {type(exc).__name__}: {redact(str(exc))[:200]}")
    if settings.NOTIFY_WEBHOOK_URL:
        try:
            _post_webhook(failures)
            result.webhook_posted = True
        except requests.RequestException as exc:
            # Never the URL itself: a chat webhook URL is a credential.
            status = getattr(exc.response, "status_code", None)
            result.errors.append(f"webhook: {type(exc).__name__}" + (f" (HTTP {status})" if status else ""))
    result.sent = result.emailed or result.webhook_posted
    if not result.sent:
        # Nothing reached anyone: the next run tries again with these and any newer ones.
        Upload.objects.filter(pk__in=[u.pk for u in uploads], failure_notified_at=now).update(failure_notified_at=None)
        log.warning("failure digest of %d upload(s) not sent: %s", len(failures), "; ".join(result.errors))
        return result
    FailureDigest.objects.create(
        sent_at=now,
        uploads=len(failures),
        emailed=result.emailed,
        webhook_posted=result.webhook_posted,
        error="; ".join(result.errors),
    )
    log.info(
        "failure digest sent for %d upload(s) (email %s, webhook %s)",
        len(failures),
        result.emailed,
        result.webhook_posted,
    )
    return result
