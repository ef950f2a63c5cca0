"""Who may read the operational endpoints that sit outside the admin."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, JsonResponse


def metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the request may read /metrics, else the refusal to answer.

    With METRICS_TOKEN set, a scraper sends ``Authorization: Bearer <token>``; without it the
    counters are open only where METRICS_PUBLIC (default: debug) says so.
    """
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        refusal = JsonResponse(
            {"error": {"code": "unauthenticated", "message": "send Authorization: Bearer <METRICS_TOKEN>"}},
            status=401,
        )
        refusal["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refusal
    if settings.METRICS_PUBLIC:
        return None
    return JsonResponse(
        {"error": {"code": "forbidden", "message": "metrics are closed: set METRICS_TOKEN (or METRICS_PUBLIC=true)"}},
        status=403,
    )
