"""Pushed storage events: ``POST /api/v1/events/r2`` and ``/events/s3``, signed with HMAC-SHA256,
and ``/events/azure`` from Event Grid, authenticated by a shared key.

The signature covers ``timestamp + "." + raw body``, so the raw bytes are read before anything
parses them; a body that is too big, unsigned, stale, badly signed or unreadable is refused with a
4xx and nothing is recorded. Event Grid cannot sign: its subscription sends the key the operator
put in the endpoint URL (``?key=``) or in a delivery header (``X-Webhook-Key``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router, Schema

from uploads.events import EventParseError, ObjectEvent, parse_json_bytes, parse_r2_body, parse_s3_body
from uploads.events.azure import parse_event_grid_body, validation_request
from uploads.middleware import is_json_media_type
from uploads.models import EventSource
from uploads.services import ingest

log = logging.getLogger(__name__)

router = Router(tags=["events"])

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
_MAX_TIMESTAMP_DIGITS = 12


class EventsAcceptedOut(Schema):
    received: int
    duplicates: int
    unmatched: int


class EventErrorOut(Schema):
    error: dict[str, Any]


class WebhookRefused(Exception):
    """A pushed body that is refused before anything is recorded."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _refuse(exc: WebhookRefused) -> JsonResponse:
    return JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)


def signature_for(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``, the X-Signature value."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _read_body(request: HttpRequest) -> bytes:
    limit = settings.EVENTS_WEBHOOK_MAX_BYTES
    too_big = WebhookRefused(413, "too_large", f"the body is larger than {limit} bytes")
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit():
        raise WebhookRefused(400, "invalid", "Content-Length is not a number")
    if int(declared) > limit:
        raise too_big
    if not is_json_media_type(request.content_type or ""):
        raise WebhookRefused(415, "unsupported_media_type", "send the body as application/json (Content-Type)")
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_big from None
    if len(body) > limit:
        raise too_big
    return body


def _verify_signature(request: HttpRequest, body: bytes) -> None:
    secret = settings.EVENTS_WEBHOOK_SECRET
    if not secret:
        raise WebhookRefused(
            503, "not_configured", "pushed events are refused: EVENTS_WEBHOOK_SECRET is not configured"
        )
    timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
    signature = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not timestamp or not signature:
        raise WebhookRefused(401, "unsigned", f"send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookRefused(401, "bad_timestamp", f"{TIMESTAMP_HEADER} must be Unix seconds")
    if abs(time.time() - int(timestamp)) > settings.EVENTS_SIGNATURE_MAX_AGE_SECONDS:
        raise WebhookRefused(
            401,
            "stale",
            f"the signature is older than {settings.EVENTS_SIGNATURE_MAX_AGE_SECONDS} s (or in the future)",
        )
    expected = signature_for(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", errors="replace")):
        raise WebhookRefused(401, "bad_signature", "the signature does not match the body")


def _receive(request: HttpRequest, parse: Callable[[Any], list[ObjectEvent]]) -> HttpResponse:
    try:
        body = _read_body(request)
        _verify_signature(request, body)
        try:
            events = parse(parse_json_bytes(body))
        except EventParseError as exc:
            raise WebhookRefused(400, "unreadable", str(exc)) from None
    except WebhookRefused as exc:
        log.info("refused a pushed event (%s): %s", exc.code, exc.message)
        return _refuse(exc)
    return _record_pushed(events)


def _record_pushed(events: list[ObjectEvent]) -> HttpResponse:
    # One transaction (and a constant number of statements) per body: the sender retries the
    # whole body if anything fails.
    results = ingest.record_batch(source=EventSource.WEBHOOK, items=events)
    duplicates = sum(r.duplicate for r in results)
    unmatched = sum(r.unmatched for r in results)
    return JsonResponse({"received": len(events), "duplicates": duplicates, "unmatched": unmatched}, status=202)


_RESPONSES: dict[int, Any] = {202: EventsAcceptedOut, **{code: EventErrorOut for code in (400, 401, 413, 415, 503)}}
# The body is read raw (the signature covers its bytes), so the schema is declared here.
_SIGNED_JSON_BODY: dict[str, Any] = {
    "parameters": [
        {
            "in": "header",
            "name": TIMESTAMP_HEADER,
            "required": True,
            "description": "Unix seconds; within EVENTS_SIGNATURE_MAX_AGE_SECONDS of the server's clock",
            "schema": {"type": "string", "pattern": rf"^[0-9]{{1,{_MAX_TIMESTAMP_DIGITS}}}$"},
        },
        {
            "in": "header",
            "name": SIGNATURE_HEADER,
            "required": True,
            "description": 'sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>',
            "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
    },
}


@router.post("/r2", response=_RESPONSES, url_name="events_r2", openapi_extra=_SIGNED_JSON_BODY)
def receive_r2_events(request: HttpRequest) -> HttpResponse:
    """R2 notifications pushed by a Worker: one, a list, or a batch ``{"messages": [{"id", "body"}]}``."""
    return _receive(request, parse_r2_body)


@router.post("/s3", response=_RESPONSES, url_name="events_s3", openapi_extra=_SIGNED_JSON_BODY)
def receive_s3_events(request: HttpRequest) -> HttpResponse:
    """S3 notifications ``{"Records": [...]}`` pushed by a forwarder (the test event is accepted and skipped)."""
    return _receive(request, parse_s3_body)


AZURE_KEY_PARAMETER = "key"
AZURE_KEY_HEADER = "X-Webhook-Key"
# CloudEvents' abuse-protection handshake (CloudEvents HTTP webhook spec, as Event Grid sends it).
REQUEST_ORIGIN_HEADER = "WebHook-Request-Origin"
ALLOWED_ORIGIN_HEADER = "WebHook-Allowed-Origin"


def _verify_azure_key(request: HttpRequest) -> None:
    secret = settings.AZURE_EVENTS_WEBHOOK_KEY
    if not secret:
        raise WebhookRefused(
            503, "not_configured", "Azure events are refused: AZURE_EVENTS_WEBHOOK_KEY is not configured"
        )
    given = request.GET.get(AZURE_KEY_PARAMETER, "") or request.headers.get(AZURE_KEY_HEADER, "")
    if not given:
        raise WebhookRefused(
            401, "unauthenticated", f"send the shared key as ?{AZURE_KEY_PARAMETER}= or the {AZURE_KEY_HEADER} header"
        )
    if not hmac.compare_digest(secret.encode("utf-8"), given.encode("utf-8", errors="replace")):
        raise WebhookRefused(401, "bad_key", "the shared key is not the one configured")


def _abuse_protection(request: HttpRequest) -> HttpResponse:
    """Answer the CloudEvents OPTIONS handshake: allow the origin Event Grid announces."""
    try:
        _verify_azure_key(request)
        origin = request.headers.get(REQUEST_ORIGIN_HEADER, "").strip()
        if not origin or len(origin) > 255 or not origin.isascii() or any(c in origin for c in "\r\n,"):
            raise WebhookRefused(400, "invalid", f"send the {REQUEST_ORIGIN_HEADER} header (one origin)")
    except WebhookRefused as exc:
        log.info("refused an Azure handshake (%s): %s", exc.code, exc.message)
        return _refuse(exc)
    response = HttpResponse(status=200)
    response[ALLOWED_ORIGIN_HEADER] = origin
    response["Allow"] = "OPTIONS, POST"
    return response


_AZURE_RESPONSES: dict[int, Any] = {
    200: dict[str, str],
    **_RESPONSES,
}
_AZURE_KEYED_JSON_BODY: dict[str, Any] = {
    "parameters": [
        {
            "in": "query",
            "name": AZURE_KEY_PARAMETER,
            "required": False,
            "description": f"the shared key AZURE_EVENTS_WEBHOOK_KEY (or send it as the {AZURE_KEY_HEADER} header)",
            "schema": {"type": "string"},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": ["object", "array"]}}
            for media in ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")
        },
    },
}


@router.api_operation(
    ["POST", "OPTIONS"],
    "/azure",
    response=_AZURE_RESPONSES,
    url_name="events_azure",
    openapi_extra=_AZURE_KEYED_JSON_BODY,
)
def receive_azure_events(request: HttpRequest) -> HttpResponse:
    """Event Grid blob events (Event Grid schema or CloudEvents 1.0), with both validation handshakes.

    A ``Microsoft.EventGrid.SubscriptionValidationEvent`` is answered ``{"validationResponse": code}``;
    an ``OPTIONS`` request (CloudEvents abuse protection) gets ``WebHook-Allowed-Origin``.
    """
    if request.method == "OPTIONS":
        return _abuse_protection(request)
    try:
        body = _read_body(request)
        _verify_azure_key(request)
        try:
            data = parse_json_bytes(body)
            handshake = validation_request(data)
            events = [] if handshake else parse_event_grid_body(data)
        except EventParseError as exc:
            raise WebhookRefused(400, "unreadable", str(exc)) from None
    except WebhookRefused as exc:
        log.info("refused a pushed Azure event (%s): %s", exc.code, exc.message)
        return _refuse(exc)
    if handshake is not None:
        log.info("answered an Event Grid subscription validation")
        return JsonResponse({"validationResponse": handshake.validation_code}, status=200)
    return _record_pushed(events)
