"""Refusals under /api/ answer the API's JSON error shape, whatever part of Django refused.

Django answers a bad Host, a body over DATA_UPLOAD_MAX_MEMORY_SIZE, an unknown route or a
wrong method with an HTML page (or an empty body). API clients parse JSON, so this middleware
(first in MIDDLEWARE) checks the Host and the declared length itself and rewrites any non-JSON
error response under /api/ into ``{"error": {"code", "message"}}`` with the same status.
The admin keeps Django's HTML pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

API_PREFIX = "/api/"

_CODES = {
    400: ("bad_request", "the request could not be understood"),
    401: ("unauthenticated", "authentication is required"),
    403: ("forbidden", "the request is not allowed"),
    404: ("not_found", "no such API route"),
    405: ("method_not_allowed", "this route does not accept that method"),
    413: ("too_large", "the request body is too large"),
    415: ("unsupported_media_type", "send the body as application/json"),
    429: ("too_many_requests", "too many requests; try again later"),
    500: ("server_error", "the server failed to answer; the failure is logged"),
}


def json_error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    """The API's one error shape, for refusals made outside django-ninja."""
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def is_json_media_type(content_type: str) -> bool:
    """application/json, or any ``+json`` type such as application/merge-patch+json."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class ApiErrorsMiddleware:
    """Keep every refusal under /api/ in the JSON error shape."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        try:
            request.get_host()
        except DisallowedHost:
            log.info("refused an API request for a host not in DJANGO_ALLOWED_HOSTS")
            return json_error(400, "bad_host", "the Host header names a host this service does not serve")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit() and limit is not None and int(declared) > limit:
            return json_error(413, "too_large", f"the request body is larger than {limit} bytes", limit=limit)
        response = self.get_response(request)
        if response.status_code < 400 or is_json_media_type(response.get("Content-Type", "")):
            return response
        status = response.status_code
        code, message = _CODES.get(status, ("http_error", f"the request was refused ({status})"))
        if status == 413:
            message = f"the request body is larger than {limit} bytes"
        rewritten = json_error(status, code, message)
        for name, value in response.items():  # Allow, X-Frame-Options, Vary, ...
            if name.lower() not in {"content-type", "content-length"}:
                rewritten[name] = value
        return rewritten
