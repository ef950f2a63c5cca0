"""ModelAdmins for the ledger: uploads, storage events, link attempts; replay."""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.admin.base import ReadOnlyAdmin, upload_link
from uploads.models import EventStatus, LinkAttempt, LinkOutcome, StorageEvent, TargetKind, Upload, UploadState
from uploads.services.replay import plan_replay, replay_uploads

STATE_COLOURS = {
    UploadState.ISSUED: "#607d8b",
    UploadState.UPLOADED: "#1565c0",
    UploadState.LINKED: "#2e7d32",
    UploadState.FAILED: "#c62828",
    UploadState.EXPIRED: "#8d6e63",
    UploadState.SUPERSEDED: "#6a1b9a",
    UploadState.ABORTED: "#37474f",
    EventStatus.MATCHED: "#2e7d32",
    EventStatus.UNMATCHED: "#ef6c00",
    EventStatus.UNPARSEABLE: "#c62828",
    LinkOutcome.RETRY: "#ef6c00",
    LinkOutcome.NOOP: "#607d8b",
}
# A bulk replay asks for confirmation listing every upload: past this, use `manage.py replay`.
MAX_BULK_REPLAY = 500
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def badge(value: str, label: str) -> SafeString:
    """A coloured pill for a state, status or outcome."""
    return format_html(
        '<span class="ledger-badge" style="background:{};color:#fff;padding:2px 8px;border-radius:9px;'
        'font-size:11px;white-space:nowrap" data-state="{}">{}</span>',
        STATE_COLOURS.get(value, "#455a64"),  # type: ignore[call-overload]
        value,
        label,
    )


def ckan_resource_url(upload: Upload) -> str:
    """The resource's page in CKAN, or the organization's or group's for an image (empty without CKAN_URL)."""
    if not settings.CKAN_URL:
        return ""
    if upload.target_kind != TargetKind.RESOURCE:
        return f"{settings.CKAN_URL}/{upload.target_kind}/{upload.target_name or upload.target_id}"
    if upload.package_id:
        return f"{settings.CKAN_URL}/dataset/{upload.package_id}/resource/{upload.resource_id}"
    return f"{settings.CKAN_URL}/resource/{upload.resource_id}"


def ckan_dataset_url(upload: Upload) -> str:
    """The dataset's page in CKAN (by name when kept, else by id; empty without CKAN_URL or a dataset)."""
    dataset = upload.dataset_name or upload.package_id
    return f"{settings.CKAN_URL}/dataset/{dataset}" if settings.CKAN_URL and dataset else ""


def ckan_organization_url(upload: Upload) -> str:
    """The organization's page in CKAN (empty without CKAN_URL or a kept organization name)."""
    if not settings.CKAN_URL or not upload.organization_name:
        return ""
    return f"{settings.CKAN_URL}/organization/{upload.organization_name}"


def ckan_anchor(url: str, text: str, *, css: str = "") -> SafeString:
    """A link to a CKAN page (plain text when there is no URL)."""
    if not url:
        return format_html("{}", text or "—")
    return format_html('<a href="{}" class="{}" rel="noopener" target="_blank">{}</a>', url, css, text or "—")


class CheapCountPaginator(Paginator):
    """Counts at most CAP rows; the unfiltered ledger on PostgreSQL uses the planner's estimate.

    An exact COUNT(*) over a million uploads costs more than the page itself, and nobody
    pages to row 900,000: they filter. ``count_note`` tells the template to say so.
    """

    CAP = 10_000
    count_note = ""

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        qs: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        if connection.vendor == "postgresql" and not qs.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [qs.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.CAP:
                self.count_note = "about"
                return int(row[0])
        n = qs.order_by()[: self.CAP + 1].count()
        if n > self.CAP:
            self.count_note = "more than"
            return self.CAP
        return n


# A search term matching at most this many uploads in each of its fields is answered from those
# fields' own indexes (the ids, then the page by primary key); a broader one by the OR below.
SEARCH_NARROW_LIMIT = 2_000


def text_search(term: str) -> Q:
    """Uploads whose requester is ``term`` or whose file or dataset name starts with it.

    One OR over three indexed columns is planned badly on a large ledger: PostgreSQL walks
    ``upload_issued`` newest first and tests the OR on every row, expecting the LIMIT to stop it
    early, which a rare term never does (940 ms at 1,000,000 uploads for 111 matches). So each
    field is first asked through its own index for at most SEARCH_NARROW_LIMIT + 1 ids: when every
    field stays within the limit (the usual case: a file, a dataset), the page is those ids
    ordered by issue time. When one field matches more, the matches are dense enough for the
    newest-first walk to fill a page quickly, and the OR is used as it is.
    """
    fields = (Q(requested_by=term), Q(filename__startswith=term), Q(dataset_name__startswith=term))
    ids: set[UUID] = set()
    for condition in fields:
        found = list(
            Upload.objects.filter(condition).order_by().values_list("pk", flat=True)[: SEARCH_NARROW_LIMIT + 1]
        )
        if len(found) > SEARCH_NARROW_LIMIT:
            return fields[0] | fields[1] | fields[2]
        ids.update(found)
    return Q(pk__in=ids)


class InputFilter(admin.SimpleListFilter):
    """A text box filter on one indexed column: no SELECT DISTINCT over the ledger to list choices."""

    template = "admin/dashboard/input_filter.html"
    field_name = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("", "")]  # one dummy choice, so the admin shows the filter at all

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        return queryset.filter(**{self.field_name: value}) if value else queryset

    def choices(self, changelist: Any) -> Any:
        keep = [
            (key, value)
            for key, value in changelist.params.items()
            if key not in (self.parameter_name, "p") and not key.startswith("_")
        ]
        yield {
            "query_parts": keep,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name, "p"]),
            "value": self.value() or "",
        }


class RequesterFilter(InputFilter):
    title = "requester (CKAN user name)"
    parameter_name = "requester"
    field_name = "requested_by"


class DatasetFilter(InputFilter):
    title = "dataset id"
    parameter_name = "dataset"
    field_name = "package_id"


class OrganizationFilter(InputFilter):
    title = "organization (CKAN name)"
    parameter_name = "organization"
    field_name = "organization_name"


class DatasetNameFilter(InputFilter):
    title = "dataset (CKAN name)"
    parameter_name = "dataset_name"
    field_name = "dataset_name"


class ResourceFilter(InputFilter):
    title = "resource id"
    parameter_name = "resource"
    field_name = "resource_id"


class LedgerListAdmin(ReadOnlyAdmin):
    """A ledger list that stays fast at millions of rows: no exact COUNT(*) beyond a cap."""

    show_full_result_count = False
    paginator = CheapCountPaginator
    list_per_page = 50


@admin.register(Upload)
class UploadAdmin(LedgerListAdmin):
    list_display = (
        "filename",
        "state_badge",
        "dataset_column",
        "organization_column",
        "resource_column",
        "requested_by",
        "issued_at",
        "attempts",
        "linked_at",
    )
    list_filter = (
        "state",
        "target_kind",
        ("issued_at", admin.DateFieldListFilter),
        "dataset_private",
        OrganizationFilter,
        DatasetNameFilter,
        RequesterFilter,
        DatasetFilter,
        ResourceFilter,
    )
    search_fields = ("=id", "=resource_id", "=package_id", "key", "filename", "=requested_by", "dataset_name")
    search_help_text = (
        "An upload, resource or dataset id; an object key (or its start); a file name or a dataset's CKAN name "
        "(or their start); a requester."
    )
    ordering = ("-issued_at",)
    sortable_by = ("filename", "state_badge", "issued_at", "linked_at", "attempts", "requested_by")
    actions = ["replay_selected"]
    change_form_template = "admin/uploads/upload/change_form.html"
    fieldsets = (
        (
            "Upload",
            {
                "fields": (
                    "id",
                    "state_badge",
                    "dataset_column",
                    "organization_column",
                    "resource_column",
                    "target_kind",
                    "target_id",
                    "ckan_link",
                    "package_id",
                    "dataset_private",
                    "filename",
                    "content_type",
                    "declared_size",
                    "declared_sha256",
                    "multipart_upload_id",
                    "part_size",
                    "part_count",
                    "bucket",
                    "key",
                    "requested_by",
                    "requested_by_id",
                    "client_address",
                    "issued_at",
                    "expires_at",
                )
            },
        ),
        (
            "Object in storage",
            {
                "fields": (
                    "object_size",
                    "object_etag",
                    "object_content_type",
                    "verified_sha256",
                    "object_last_modified",
                    "object_seen_at",
                    "object_deleted_at",
                )
            },
        ),
        (
            "Linking",
            {
                "fields": (
                    "attempts",
                    "next_attempt_at",
                    "last_error",
                    "claimed_at",
                    "linked_at",
                    "linked_url",
                    "updated_at",
                )
            },
        ),
    )
    readonly_fields = tuple(f for _, opts in fieldsets for f in opts["fields"])  # type: ignore[index,misc]

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Upload) -> SafeString:
        return badge(obj.state, obj.get_state_display())

    @admin.display(description="dataset", ordering="dataset_name")
    def dataset_column(self, obj: Upload) -> SafeString:
        return ckan_anchor(ckan_dataset_url(obj), obj.dataset_title or obj.dataset_name, css="ckan-dataset")

    @admin.display(description="organization", ordering="organization_name")
    def organization_column(self, obj: Upload) -> SafeString:
        return ckan_anchor(
            ckan_organization_url(obj), obj.organization_title or obj.organization_name, css="ckan-organization"
        )

    @admin.display(description="for")
    def resource_column(self, obj: Upload) -> SafeString:
        """The resource, or "image of <organization or group>"."""
        if obj.target_kind != TargetKind.RESOURCE:
            label = f"image of {obj.get_target_kind_display().split()[0].lower()} {obj.target_title or obj.target_name}"
            return ckan_anchor(ckan_resource_url(obj), label, css=f"ckan-{obj.target_kind}-image")
        return ckan_anchor(ckan_resource_url(obj), obj.resource_name, css="ckan-resource")

    @admin.display(description="CKAN resource id")
    def ckan_link(self, obj: Upload) -> SafeString:
        if obj.target_kind != TargetKind.RESOURCE:
            return format_html("{}", "—")
        url = ckan_resource_url(obj)
        if not url:
            return format_html("{}", obj.resource_id)
        return format_html('<a href="{}" rel="noopener" target="_blank">{}</a>', url, obj.resource_id)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Upload], search_term: str
    ) -> tuple[QuerySet[Upload], bool]:
        """Index-friendly search: ids and requesters match exactly, keys and file names by prefix."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if _UUID.match(term):
            # An organization's or group's id finds its images (through the target index).
            images = Q(target_kind__in=[TargetKind.ORGANIZATION, TargetKind.GROUP], target_id=term)
            ids = Q(resource_id=term) | Q(package_id=term) | images
            try:
                ids |= Q(id=UUID(term))
            except ValueError:
                pass
            return queryset.filter(ids), False
        if "/" in term:
            return queryset.filter(Q(key=term) | Q(key__startswith=term)), False
        return queryset.filter(text_search(term)), False

    def get_urls(self) -> list[URLPattern]:
        replay = path(
            "<path:object_id>/replay/",
            self.admin_site.admin_view(self.replay_view),
            name="uploads_upload_replay",
        )
        return [replay, *super().get_urls()]

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("uploads.replay_upload")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        upload = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if upload is not None:
            context.update(
                timeline=build_timeline(upload),
                ckan_url=ckan_resource_url(upload),
                can_replay=self.has_replay_permission(request)
                and upload.state in (UploadState.FAILED, UploadState.UPLOADED),
                replay_url=reverse("admin:uploads_upload_replay", args=[upload.pk]),
            )
        return super().change_view(request, object_id, form_url, context)

    def replay_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Replay one upload (POST only, with the replay permission)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_replay_permission(request):
            raise PermissionDenied
        upload = self.get_object(request, object_id)
        if upload is None:
            raise Http404("no such upload")
        result = replay_uploads(upload_ids=[upload.pk], by=request.user.get_username())
        if result.replayed:
            self.message_user(request, f"Replay queued for {upload.filename}: a worker will link it shortly.")
        else:
            self.message_user(
                request, f"Not replayed: {result.skipped.get(upload.pk, 'nothing to do')}.", level=messages.WARNING
            )
        return HttpResponseRedirect(reverse("admin:uploads_upload_change", args=[upload.pk]))

    @admin.action(description="Replay selected uploads", permissions=["replay"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[Upload]) -> HttpResponse | None:
        if not self.has_replay_permission(request):
            raise PermissionDenied
        uploads = list(
            queryset.only("id", "filename", "resource_id", "state", "attempts", "requested_by", "issued_at")[
                : MAX_BULK_REPLAY + 1
            ]
        )
        if len(uploads) > MAX_BULK_REPLAY:
            self.message_user(
                request,
                f"More than {MAX_BULK_REPLAY} uploads selected: narrow the filters, or use `manage.py replay`.",
                level=messages.ERROR,
            )
            return None
        plan = plan_replay(uploads)
        if request.POST.get("confirm") == "yes":
            result = replay_uploads(upload_ids=[item.upload.pk for item in plan], by=request.user.get_username())
            self.message_user(
                request, f"Replay queued for {len(result.replayed)} upload(s); {len(result.skipped)} skipped."
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Replay uploads?",
            "opts": self.opts,
            "plan": plan,
            "replay_count": sum(1 for item in plan if item.replay),
            "skip_count": sum(1 for item in plan if not item.replay),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/uploads/upload/replay_confirmation.html", context)


def build_timeline(upload: Upload) -> list[dict[str, Any]]:
    """Everything that happened to an upload, oldest first (two queries besides the upload)."""
    entries: list[dict[str, Any]] = [
        {"at": upload.issued_at, "kind": "issued", "title": f"URL issued to {upload.requested_by or 'unknown'}"}
    ]
    for event in upload.events.order_by("first_received_at").only(
        "id", "source", "action", "event_name", "deliveries", "first_received_at", "last_received_at", "size", "upload"
    ):
        entries.append(
            {
                "at": event.first_received_at,
                "kind": "event",
                "title": f"{event.get_action_display()} event via {event.get_source_display()}",
                "detail": f"delivered {event.deliveries} time(s), last at {event.last_received_at:%Y-%m-%d %H:%M:%S}",
                "url": reverse("admin:uploads_storageevent_change", args=[event.pk]),
            }
        )
    if upload.object_seen_at:
        entries.append({"at": upload.object_seen_at, "kind": "seen", "title": "Object seen in storage"})
    for attempt in upload.link_attempts.order_by("started_at"):
        who = f" by {attempt.triggered_by}" if attempt.triggered_by else ""
        entries.append(
            {
                "at": attempt.started_at,
                "kind": "attempt",
                "title": f"Link attempt ({attempt.get_trigger_display()}{who})",
                "outcome": attempt.outcome,
                "outcome_badge": badge(attempt.outcome, attempt.get_outcome_display()),
                "ckan_status": attempt.ckan_status,
                "error": attempt.error,
            }
        )
    if upload.linked_at:
        entries.append({"at": upload.linked_at, "kind": "linked", "title": "Linked in CKAN"})
    entries.sort(key=lambda entry: entry["at"])
    return entries


def target_label(upload: Upload | None) -> SafeString:
    """The dataset an upload is for (a link to its CKAN page), or "image of <organization or group>"."""
    if upload is None:
        return format_html("{}", "—")
    if upload.target_kind != TargetKind.RESOURCE:
        return format_html("image of {} {}", upload.target_kind, upload.target_title or upload.target_name)
    return ckan_anchor(ckan_dataset_url(upload), upload.dataset_title or upload.dataset_name, css="ckan-dataset")


@admin.register(StorageEvent)
class StorageEventAdmin(LedgerListAdmin):
    list_display = (
        "first_received_at",
        "status_badge",
        "source",
        "action",
        "key",
        "upload_link",
        "upload_file",
        "upload_dataset",
        "deliveries",
    )
    # One join for the page: the matched upload's file and dataset names come with the events.
    list_select_related = ("upload",)
    list_filter = ("status", "source", "action", ("first_received_at", admin.DateFieldListFilter))
    search_fields = ("=key",)
    search_help_text = "An exact object key."
    ordering = ("-first_received_at",)
    fields = (
        "status_badge",
        "source",
        "action",
        "event_name",
        "bucket",
        "key",
        "size",
        "etag",
        "event_time",
        "sequencer",
        "upload_link",
        "upload_file",
        "upload_dataset",
        "deliveries",
        "first_received_at",
        "last_received_at",
        "dedupe_key",
        "parse_error",
        "pretty_payload",
        "raw_body_pre",
    )
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: StorageEvent) -> SafeString:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="upload")
    def upload_link(self, obj: StorageEvent) -> SafeString:
        return upload_link(obj.upload_id)

    @admin.display(description="file")
    def upload_file(self, obj: StorageEvent) -> str:
        return obj.upload.filename if obj.upload is not None else "—"

    @admin.display(description="dataset or target")
    def upload_dataset(self, obj: StorageEvent) -> SafeString:
        return target_label(obj.upload)

    @admin.display(description="payload")
    def pretty_payload(self, obj: StorageEvent) -> SafeString:
        if obj.payload is None:
            return format_html("{}", "—")
        return format_html('<pre class="ledger-json">{}</pre>', json.dumps(obj.payload, indent=2, sort_keys=True))

    @admin.display(description="raw body (not JSON)")
    def raw_body_pre(self, obj: StorageEvent) -> SafeString:
        return (
            format_html('<pre class="ledger-json">{}</pre>', obj.raw_body) if obj.raw_body else format_html("{}", "—")
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        status = request.GET.get("status__exact")
        titles = {EventStatus.UNMATCHED: "Unmatched events", EventStatus.UNPARSEABLE: "Unparseable events"}
        context = dict(extra_context or {})
        if status in titles:
            context["title"] = titles[EventStatus(status)]
        return super().changelist_view(request, context)


@admin.register(LinkAttempt)
class LinkAttemptAdmin(LedgerListAdmin):
    list_display = (
        "started_at",
        "upload_link",
        "upload_file",
        "upload_dataset",
        "trigger",
        "triggered_by",
        "outcome_badge",
        "ckan_status",
        "error",
    )
    list_filter = ("outcome", "trigger", ("started_at", admin.DateFieldListFilter))
    # One join for the page's 50 rows: the file and dataset names come with the attempts.
    list_select_related = ("upload",)
    ordering = ("-started_at",)
    fields = (
        "upload_link",
        "started_at",
        "finished_at",
        "trigger",
        "triggered_by",
        "outcome_badge",
        "ckan_status",
        "error",
    )
    readonly_fields = fields

    @admin.display(description="file")
    def upload_file(self, obj: LinkAttempt) -> str:
        return obj.upload.filename

    @admin.display(description="dataset or target")
    def upload_dataset(self, obj: LinkAttempt) -> SafeString:
        return target_label(obj.upload)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj: LinkAttempt) -> SafeString:
        return badge(obj.outcome, obj.get_outcome_display())

    @admin.display(description="upload")
    def upload_link(self, obj: LinkAttempt) -> SafeString:
        return upload_link(obj.upload_id)
