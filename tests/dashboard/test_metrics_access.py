"""/metrics is behind a bearer token when one is set, and closed without one unless debug opens it."""

from __future__ import annotations

import pytest
from django.test import override_settings

TOKEN = "metrics-token-0123456789abcdef"


@pytest.mark.django_db
def test_it_wants_the_bearer_token_when_one_is_set(client):
    with override_settings(METRICS_TOKEN=TOKEN, METRICS_PUBLIC=True):
        missing = client.get("/metrics")
        wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
        right = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"]["code"] == "unauthenticated"
    assert missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "ckanrec_uploads" in right.content.decode()


@pytest.mark.django_db
def test_it_is_closed_without_a_token_outside_debug(client):
    with override_settings(METRICS_TOKEN="", METRICS_PUBLIC=False):
        response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
