from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from dashboard.overview import overview


class ReconcilerAdminSite(admin.AdminSite):
    """The admin where stewards browse the ledger and operators replay failed links."""

    site_header = "CKAN Upload Reconciler"
    site_title = "Upload Reconciler"
    index_title = "Overview"
    index_template = "admin/dashboard/overview.html"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The landing page: the overview for those who may see the ledger, then the app list."""
        context = dict(extra_context or {})
        if request.user.has_perm("uploads.view_upload"):
            # ?organization=<CKAN name> narrows the overview to one organization's uploads.
            context["overview"] = overview(organization=request.GET.get("organization", "")[:100])
        return super().index(request, context)
