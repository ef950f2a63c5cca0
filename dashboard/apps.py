from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class DashboardAdminConfig(admin_apps.AdminConfig):
    """Replaces the stock admin site with the reconciler's own."""

    default = False
    default_site = "dashboard.sites.ReconcilerAdminSite"


class DashboardConfig(AppConfig):
    default = True
    name = "dashboard"
    verbose_name = "Dashboard"
