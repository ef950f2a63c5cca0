"""ModelAdmins for reconciliation runs and discrepancies: read-only, with heal and ignore for operators."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.admin.base import ReadOnlyAdmin, upload_link
from uploads import storage
from uploads.models import Discrepancy, DiscrepancyKind, DiscrepancyState, ReconcileRun
from uploads.services import reconcile

# Operators hold change_discrepancy (dashboard/roles.py); stewards only view.
HEAL_PERMISSION = "uploads.change_discrepancy"


def _kind_counter(kind: DiscrepancyKind) -> Any:
    def column(obj: ReconcileRun) -> int:
        return int((obj.counts or {}).get("found", {}).get(kind.value, 0))

    column.short_description = kind.label  # type: ignore[attr-defined]
    return column


@admin.register(ReconcileRun)
class ReconcileRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "state",
        "triggered_by",
        "fix",
        "dry_run",
        "objects_scanned",
        "uploads_checked",
        "resources_checked",
        *[f"found_{kind.value}" for kind in DiscrepancyKind],
        "discrepancies_link",
    )
    list_filter = ("state", "fix", "dry_run")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in ReconcileRun._meta.fields]

    @admin.display(description="Discrepancies")
    def discrepancies_link(self, obj: ReconcileRun) -> SafeString:
        url = reverse("admin:uploads_discrepancy_changelist") + f"?last_seen_run__id__exact={obj.pk}"
        return format_html('<a href="{}">seen in this run</a>', url)


for _kind in DiscrepancyKind:
    setattr(ReconcileRunAdmin, f"found_{_kind.value}", staticmethod(_kind_counter(_kind)))


@admin.register(Discrepancy)
class DiscrepancyAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "state", "key", "object_size", "upload_link", "object_link", "last_seen_run")
    list_filter = ("kind", "state")
    search_fields = ("key",)
    list_select_related = ("upload", "last_seen_run")
    readonly_fields = [f.name for f in Discrepancy._meta.fields] + ["upload_link", "object_link"]
    actions = ["heal_selected", "ignore_selected"]

    def has_heal_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(HEAL_PERMISSION)

    @admin.display(description="Upload")
    def upload_link(self, obj: Discrepancy) -> SafeString:
        return upload_link(obj.upload_id)

    @admin.display(description="Object")
    def object_link(self, obj: Discrepancy) -> SafeString:
        if not obj.key:
            return format_html("{}", "—")
        return format_html('<a href="{}" rel="noopener">object</a>', storage.public_url(obj.key))

    @admin.action(description="Heal selected discrepancies", permissions=["heal"])
    def heal_selected(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        actor = request.user.get_username()
        for pk in queryset.filter(state=DiscrepancyState.OPEN).values_list("pk", flat=True):
            self.message_user(request, reconcile.heal_discrepancy(discrepancy_id=pk, actor=actor))
        skipped = queryset.exclude(state=DiscrepancyState.OPEN).count()
        if skipped:
            self.message_user(request, f"{skipped} not open: left as they are", messages.WARNING)

    @admin.action(description="Ignore selected discrepancies", permissions=["heal"])
    def ignore_selected(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = reconcile.ignore_discrepancies(discrepancy_ids=ids, actor=request.user.get_username())
        self.message_user(request, f"{count} discrepancies ignored")
