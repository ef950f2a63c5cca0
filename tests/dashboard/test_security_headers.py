"""Every page carries the security headers; the admin works under its CSP (no inline scripts)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.django_db
def test_the_admin_login_page_carries_the_security_headers(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self';")
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Permissions-Policy"].startswith("camera=()")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_the_admin_pages_have_no_inline_scripts_the_policy_would_block(as_operator):
    for url in ("/admin/", "/admin/uploads/upload/", "/admin/uploads/storageevent/"):
        html = as_operator.get(url).content.decode()
        inline = [tag for tag in re.findall(r"<script[^>]*>", html) if "src=" not in tag and "json" not in tag]
        assert inline == [], url


def test_api_errors_carry_them_too(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"


def test_refusals_made_before_django_runs_carry_them_too(client):
    response = client.get("/api/v1/uploads", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
