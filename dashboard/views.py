"""Operational endpoints that sit outside the admin."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker

from dashboard import overview
from dashboard.access import metrics_refusal


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


def _metric_lines(name: str, help_text: str, kind: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: uploads by state, events by status, attempts by outcome, oldest pending."""
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    states = overview.counts_by_state()
    events = overview.events_by_status()
    outcomes = overview.attempts_by_outcome()
    age = overview.oldest_pending_age_seconds()
    lines = [
        *_metric_lines(
            "ckanrec_uploads",
            "Uploads in the ledger by state.",
            "gauge",
            [(f'{{state="{state}"}}', n) for state, n in sorted(states.items())],
        ),
        *_metric_lines(
            "ckanrec_storage_events_total",
            "Distinct storage events received, by status.",
            "counter",
            [(f'{{status="{status}"}}', n) for status, n in sorted(events.items())],
        ),
        *_metric_lines(
            "ckanrec_link_attempts_total",
            "Link attempts, by outcome.",
            "counter",
            [(f'{{outcome="{outcome}"}}', n) for outcome, n in sorted(outcomes.items())],
        ),
        *_metric_lines(
            "ckanrec_oldest_pending_upload_age_seconds",
            "Age of the oldest upload still issued or uploaded (0 when none).",
            "gauge",
            [("", age or 0.0)],
        ),
    ]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8")
