from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from dashboard import views
from uploads.api import api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
]
