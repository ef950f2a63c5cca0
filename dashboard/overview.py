"""Read-only selectors behind the admin overview and /metrics: a handful of GROUP BY queries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.db.models import Count, F, Min, QuerySet
from django.db.models.functions import Substr, TruncHour
from django.urls import reverse
from django.utils import timezone

from uploads.models import EventStatus, LinkAttempt, StorageEvent, Upload, UploadState

SERIES_DAYS = 7
# Linked/failed per hour are counted over uploads issued since (window start - this): a URL
# lives at most 7 days, so an upload linked inside the window was issued inside this span, and
# the issued_at index bounds every query instead of scanning the whole ledger.
ISSUE_SLACK = timedelta(days=7)
LATENCY_SAMPLE = 10_000
REASON_PREFIX = 120
PENDING_STATES = (UploadState.ISSUED, UploadState.UPLOADED)
_PERCENTILES_SQL = (
    "SELECT count(*),"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM s.seconds)),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM s.seconds))"
    " FROM ({inner}) s"
)


def upload_list_url(organization: str = "", **params: Any) -> str:
    """The upload changelist filtered by ``params`` (admin query-string lookups), and the organization."""
    base = reverse("admin:uploads_upload_changelist")
    if organization:
        params = {**params, "organization": organization}
    return f"{base}?{urlencode(params)}" if params else base


def uploads_of(organization: str = "") -> QuerySet[Upload]:
    """The uploads the overview counts: all, or one organization's (by its CKAN name)."""
    return Upload.objects.filter(organization_name=organization) if organization else Upload.objects.all()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def age_text(age: timedelta) -> str:
    """A short human age: '2 d 3 h', '4 h 12 min', '35 s'."""
    seconds = max(int(age.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def counts_by_state(organization: str = "") -> dict[str, int]:
    """Number of uploads in each state (every state present, zeros included)."""
    counts = {state.value: 0 for state in UploadState}
    for row in uploads_of(organization).order_by().values("state").annotate(n=Count("*")):
        counts[row["state"]] = row["n"]
    return counts


def events_by_status() -> dict[str, int]:
    """Number of distinct storage events by status."""
    return {row["status"]: row["n"] for row in StorageEvent.objects.order_by().values("status").annotate(n=Count("*"))}


def attempts_by_outcome() -> dict[str, int]:
    """Number of link attempts by outcome."""
    return {row["outcome"]: row["n"] for row in LinkAttempt.objects.order_by().values("outcome").annotate(n=Count("*"))}


def oldest_in_state(state: str, organization: str = "") -> Upload | None:
    """The upload that has waited longest in ``state`` (by issue time)."""
    return (
        uploads_of(organization)
        .filter(state=state)
        .only("id", "filename", "resource_id", "issued_at", "state")
        .order_by("issued_at")
        .first()
    )


def top_failure_reasons(limit: int = 5, organization: str = "") -> list[dict[str, Any]]:
    """The most common reasons (first characters of last_error) among failed uploads."""
    rows = (
        uploads_of(organization)
        .filter(state=UploadState.FAILED)
        .order_by()
        .annotate(reason=Substr("last_error", 1, REASON_PREFIX))
        .values("reason")
        .annotate(n=Count("*"))
        .order_by("-n", "reason")[:limit]
    )
    return [
        {
            "reason": row["reason"] or "(no error recorded)",
            "count": row["n"],
            "url": upload_list_url(organization, state__exact=UploadState.FAILED, last_error__startswith=row["reason"]),
        }
        for row in rows
    ]


@dataclass
class Series:
    """One per-hour series over the window, with its bars laid out for an inline SVG."""

    name: str
    label: str
    colour: str
    total: int
    total_url: str
    bars: list[dict[str, Any]] = field(default_factory=list)
    peak: int = 0


def _hourly(qs: Any, column: str) -> dict[datetime, int]:
    rows = qs.order_by().annotate(hour=TruncHour(column)).values("hour").annotate(n=Count("*"))
    return {row["hour"]: row["n"] for row in rows}


def hourly_series(
    now: datetime | None = None, *, width: int = 840, height: int = 90, organization: str = ""
) -> list[Series]:
    """Uploads issued, linked and failed per hour over the last seven days (three queries)."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(days=SERIES_DAYS)
    hours = [start + timedelta(hours=i) for i in range(SERIES_DAYS * 24)]
    uploads = uploads_of(organization)
    recent = uploads.filter(issued_at__gte=start - ISSUE_SLACK)
    issued_from = _iso(start - ISSUE_SLACK)
    specs = [
        ("issued", "Issued", "#417690", uploads.filter(issued_at__gte=start), "issued_at", {}),
        (
            "linked",
            "Linked",
            "#2e7d32",
            recent.filter(linked_at__gte=start),
            "linked_at",
            {"issued_at__gte": issued_from, "state__in": "linked,superseded"},
        ),
        (
            "failed",
            "Failed",
            "#c62828",
            recent.filter(state=UploadState.FAILED, updated_at__gte=start),
            "updated_at",
            {"issued_at__gte": issued_from, "state__exact": UploadState.FAILED},
        ),
    ]
    bar_width = width / len(hours)
    result = []
    for name, label, colour, qs, column, extra in specs:
        counts = _hourly(qs, column)
        total = sum(counts.values())
        series = Series(
            name=name,
            label=label,
            colour=colour,
            total=total,
            total_url=upload_list_url(
                organization, **extra, **{f"{column}__gte": _iso(start), f"{column}__lt": _iso(end)}
            ),
            peak=max(counts.values(), default=0),
        )
        for i, hour in enumerate(hours):
            n = counts.get(hour, 0)
            bar_height = round(height * n / series.peak, 1) if series.peak and n else 0
            series.bars.append(
                {
                    "hour": hour,
                    "count": n,
                    "x": round(i * bar_width, 2),
                    "y": round(height - bar_height, 1),
                    "height": bar_height,
                    "url": upload_list_url(
                        organization,
                        **extra,
                        **{f"{column}__gte": _iso(hour), f"{column}__lt": _iso(hour + timedelta(hours=1))},
                    ),
                }
            )
        result.append(series)
    return result


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont does."""
    position = (len(sorted_values) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def link_latency(now: datetime | None = None, organization: str = "") -> dict[str, Any]:
    """p50 and p95 seconds from object seen to linked, for uploads linked in the last 7 days.

    PostgreSQL computes them exactly with percentile_cont; elsewhere (SQLite in development)
    they come from the latest LATENCY_SAMPLE links, which the result says.
    """
    now = now or timezone.now()
    start = now - timedelta(days=SERIES_DAYS)
    qs = uploads_of(organization).filter(
        issued_at__gte=start - ISSUE_SLACK,
        linked_at__gte=start,
        object_seen_at__isnull=False,
        state__in=[UploadState.LINKED, UploadState.SUPERSEDED],
    )
    url = upload_list_url(
        organization,
        state__in="linked,superseded",
        issued_at__gte=_iso(start - ISSUE_SLACK),
        linked_at__gte=_iso(start),
    )
    if connection.vendor == "postgresql":
        sql, params = (
            qs.order_by()
            .annotate(seconds=F("linked_at") - F("object_seen_at"))
            .values("seconds")
            .query.sql_with_params()
        )
        with connection.cursor() as cursor:
            # ``sql`` is the ORM's own compiled query; the values travel as parameters.
            cursor.execute(_PERCENTILES_SQL.replace("{inner}", sql), params)
            count, p50, p95 = cursor.fetchone()
        return {"count": count, "p50": p50, "p95": p95, "sampled": False, "url": url}
    pairs = qs.order_by("-linked_at").values_list("object_seen_at", "linked_at")[:LATENCY_SAMPLE]
    values = sorted(max((linked - seen).total_seconds(), 0.0) for seen, linked in pairs if seen and linked)
    if not values:
        return {"count": 0, "p50": None, "p95": None, "sampled": False, "url": url}
    return {
        "count": len(values),
        "p50": _percentile(values, 0.5),
        "p95": _percentile(values, 0.95),
        "sampled": len(values) == LATENCY_SAMPLE,
        "url": url,
    }


def organization_title(organization: str) -> str:
    """The title kept with the latest upload of an organization (its name when none is kept)."""
    title = (
        Upload.objects.filter(organization_name=organization)
        .exclude(organization_title="")
        .order_by("-issued_at")
        .values_list("organization_title", flat=True)
        .first()
    )
    return title or organization


def overview(now: datetime | None = None, organization: str = "") -> dict[str, Any]:
    """Everything the overview page shows: for every upload, or one organization's (by CKAN name)."""
    now = now or timezone.now()
    organization = organization.strip()
    counts = counts_by_state(organization)
    states = [
        {
            "state": state.value,
            "label": state.label,
            "count": counts[state.value],
            "url": upload_list_url(organization, state__exact=state.value),
        }
        for state in UploadState
    ]
    oldest = []
    for state, label in ((UploadState.UPLOADED, "awaiting link"), (UploadState.ISSUED, "issued, no object yet")):
        upload = oldest_in_state(state, organization)
        if upload is not None:
            oldest.append(
                {
                    "label": label,
                    "upload": upload,
                    "age": now - upload.issued_at,
                    "age_text": age_text(now - upload.issued_at),
                    "url": reverse("admin:uploads_upload_change", args=[upload.pk]),
                    "list_url": upload_list_url(organization, state__exact=state),
                }
            )
    event_counts = events_by_status()
    events = [
        {
            "status": status.value,
            "label": f"{status.label} events",
            "count": event_counts.get(status.value, 0),
            "url": f"{reverse('admin:uploads_storageevent_changelist')}?{urlencode({'status__exact': status.value})}",
        }
        for status in EventStatus
    ]
    return {
        "now": now,
        "events": events,
        "total": sum(counts.values()),
        "total_url": upload_list_url(organization),
        "states": states,
        "oldest": oldest,
        "reasons": top_failure_reasons(organization=organization),
        "series": hourly_series(now, organization=organization),
        "latency": link_latency(now, organization),
        "organization": organization,
        "organization_title": organization_title(organization) if organization else "",
    }


def oldest_pending_age_seconds(now: datetime | None = None) -> float | None:
    """Age of the oldest upload still issued or uploaded (None when nothing is pending)."""
    now = now or timezone.now()
    oldest = Upload.objects.filter(state__in=PENDING_STATES).aggregate(oldest=Min("issued_at"))["oldest"]
    return (now - oldest).total_seconds() if oldest else None
