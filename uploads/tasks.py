"""django-q2 entry points: load by id, call one service, nothing else."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings

from uploads.services import link, notify, prune, reconcile, sweep


def link_upload_task(upload_id: str, trigger: str, triggered_by: str = "") -> str:
    """Link one upload to its CKAN resource; returns the attempt's outcome."""
    return link.link_upload(upload_id=UUID(upload_id), trigger=trigger, triggered_by=triggered_by)


def sweep_task() -> dict[str, int]:
    """Re-enqueue due retries, release stuck claims, expire stale URLs (every minute)."""
    return sweep.run_sweep()


def reconcile_task() -> dict[str, Any]:
    """The scheduled reconciliation scan (daily; heals only when RECONCILE_SCHEDULE_FIX is on)."""
    run = reconcile.run_reconcile(fix=settings.RECONCILE_SCHEDULE_FIX, triggered_by="schedule")
    return {"run": run.pk, "counts": run.counts}


def prune_task() -> dict[str, Any]:
    """The daily housekeeping (uploads/services/prune.py)."""
    return prune.run_prune().as_dict()


def notify_task() -> dict[str, Any]:
    """Send a failure digest when uploads failed since the last one and the period allows (every minute)."""
    return notify.send_failure_digest().as_dict()
