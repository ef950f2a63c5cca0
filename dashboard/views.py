"""Operational endpoints that sit outside the admin."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers and the task broker is reachable, 503 otherwise."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure here means "not healthy", whatever its type
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        checks["broker"] = "ok" if get_broker().ping() else "error: no answer"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)
