"""The API docs load Swagger UI from the installed django-ninja, never from a CDN."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.staticfiles import finders


def test_the_docs_page_references_only_local_static_files_that_exist(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls, html
    static_prefix = "/" + settings.STATIC_URL.lstrip("/")
    assert [url for url in urls if not url.startswith(static_prefix)] == []
    assert "//" not in "".join(urls)
    missing = [url for url in urls if finders.find(url.removeprefix(static_prefix)) is None]
    assert missing == []
    assert {"ninja/swagger-ui-bundle.js", "ninja/swagger-ui.css"} <= {url.removeprefix(static_prefix) for url in urls}


def test_the_docs_page_may_run_only_its_own_scripts(client):
    policy = client.get("/api/v1/docs")["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "cdn" not in policy
