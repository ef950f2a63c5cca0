"""What every ledger admin shares: read-only pages and links to an upload's page."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString


class ReadOnlyAdmin(admin.ModelAdmin):
    """Nobody edits the ledger by hand: it is written only by the services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def upload_link(upload_id: UUID | None) -> SafeString:
    """A link to an upload's admin page, labelled with the start of its id (a dash when none)."""
    if upload_id is None:
        return format_html("{}", "—")
    url = reverse("admin:uploads_upload_change", args=[upload_id])
    return format_html('<a href="{}" title="{}">{}</a>', url, upload_id, str(upload_id)[:8])
