"""Operational endpoints that sit outside the admin."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker

from dashboard import overview
from dashboard.access import metrics_refusal
from uploads.consumers import health


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """503 when the database or the broker fails; 200 "degraded" when only a configured consumer's queue does."""
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
    degraded = False
    if checks["database"] == "ok":
        # A queue that blinks delays events (they wait in the queue) but loses none, and the API
        # still issues URLs: worth a look, not a reason for a load balancer to drop this instance.
        try:
            consumers = health.consumer_statuses(health.configured_consumers())
        except Exception as exc:
            checks["consumers"], degraded = f"error: {type(exc).__name__}", True
            consumers = []
        for consumer in consumers:
            checks[f"consumer:{consumer.name}"] = consumer.check
            degraded = degraded or not consumer.up
    status = ("degraded" if degraded else "ok") if healthy else "error"
    return JsonResponse({"status": status, "checks": checks}, status=200 if healthy else 503)


def _metric_lines(name: str, help_text: str, kind: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: uploads by state, events by status, attempts by outcome, oldest pending, consumers."""
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    states = overview.counts_by_state()
    events = overview.events_by_status()
    outcomes = overview.attempts_by_outcome()
    age = overview.oldest_pending_age_seconds()
    consumers = health.consumer_statuses()
    now = timezone.now()
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
        *_metric_lines(
            "ckanrec_consumer_up",
            "1 when the consumer's queue answers and its heartbeat is fresh, else 0.",
            "gauge",
            [(f'{{consumer="{c.name}"}}', int(c.up)) for c in consumers],
        ),
        *_metric_lines(
            "ckanrec_consumer_receive_errors_total",
            "Failed receives from the consumer's queue, over every process that ran it.",
            "counter",
            [(f'{{consumer="{c.name}"}}', c.row.receive_errors_total if c.row else 0) for c in consumers],
        ),
        *_metric_lines(
            "ckanrec_consumer_consecutive_errors",
            "Failed receives in a row, now (0 once the queue answers again).",
            "gauge",
            [(f'{{consumer="{c.name}"}}', c.row.consecutive_errors if c.row else 0) for c in consumers],
        ),
        *_metric_lines(
            "ckanrec_consumer_heartbeat_age_seconds",
            "Seconds since the consumer last wrote its heartbeat.",
            "gauge",
            [
                (f'{{consumer="{c.name}"}}', (now - c.row.heartbeat_at).total_seconds())
                for c in consumers
                if c.row is not None
            ],
        ),
    ]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8")
