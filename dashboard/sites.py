from __future__ import annotations

from django.contrib import admin


class ReconcilerAdminSite(admin.AdminSite):
    """The admin where stewards browse the ledger and operators replay failed links."""

    site_header = "CKAN Upload Reconciler"
    site_title = "Upload Reconciler"
    index_title = "Uploads"
