from __future__ import annotations

from unittest import mock

import pytest
from django.test import override_settings

from uploads.consumers.health import HealthReporter


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


@pytest.mark.django_db
@override_settings(SQS_QUEUE_URL="https://sqs.eu-west-1.amazonaws.com/123456789012/events")
def test_it_answers_200_degraded_naming_the_consumer_whose_queue_fails(client):
    reporter = HealthReporter("sqs")
    reporter.started()
    reporter.error("could not receive from SQS: EndpointConnectionError")
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["consumer:sqs"].startswith("error: could not receive from SQS: EndpointConnectionError (1 ")
    assert "amazonaws" not in response.content.decode()
    reporter.ok()
    assert client.get("/healthz").json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "consumer:sqs": "ok"},
    }


@pytest.mark.django_db
@override_settings(CF_QUEUE_ID="q-1")
def test_it_is_degraded_when_a_configured_consumer_never_wrote_a_heartbeat(client):
    response = client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == (200, "degraded")
    assert response.json()["checks"]["consumer:r2-queue"] == "error: no heartbeat yet (is the consumer running?)"


@pytest.mark.django_db
@override_settings(SQS_QUEUE_URL="https://sqs.eu-west-1.amazonaws.com/123456789012/events")
def test_a_broken_broker_is_still_a_503_when_a_consumer_also_fails(client):
    HealthReporter("sqs").error("could not receive from SQS: EndpointConnectionError")
    with mock.patch("dashboard.views.get_broker", side_effect=ConnectionError("redis down")):
        response = client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == (503, "error")


@pytest.mark.django_db
@override_settings(SQS_QUEUE_URL="https://sqs.eu-west-1.amazonaws.com/123456789012/events")
def test_an_unreadable_consumer_table_is_degraded_not_a_500(client):
    with mock.patch("dashboard.views.health.consumer_statuses", side_effect=RuntimeError("no such table")):
        response = client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == (200, "degraded")
    assert response.json()["checks"]["consumers"] == "error: RuntimeError"
