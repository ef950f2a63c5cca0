from __future__ import annotations

from unittest import mock

import pytest


@pytest.mark.django_db
def test_it_says_ok_when_the_database_and_broker_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_it_answers_503_naming_the_broken_part(client):
    with mock.patch("dashboard.views.get_broker", side_effect=ConnectionError("redis down")):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "error: ConnectionError"}
