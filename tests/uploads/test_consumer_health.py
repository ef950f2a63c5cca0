from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone

from uploads.consumers import health
from uploads.consumers.health import HealthReporter
from uploads.models import ConsumerHealth

pytestmark = pytest.mark.django_db


def status(name: str = "sqs") -> str:
    [consumer] = health.consumer_statuses([name])
    return consumer.check


def test_a_started_consumer_is_starting_until_its_queue_answers():
    reporter = HealthReporter("sqs")
    reporter.started()
    assert status() == "starting"
    reporter.ok()
    assert status() == "ok"


def test_errors_are_counted_in_a_row_and_in_total_and_an_answer_ends_the_streak():
    reporter = HealthReporter("sqs")
    reporter.started()
    reporter.error("could not receive from SQS: EndpointConnectionError")
    reporter.error("could not receive from SQS: EndpointConnectionError")
    row = ConsumerHealth.objects.get(name="sqs")
    assert (row.consecutive_errors, row.receive_errors_total) == (2, 2)
    assert status().startswith("error: could not receive from SQS: EndpointConnectionError (2 in a row, last at ")
    reporter.ok()
    row.refresh_from_db()
    assert (row.consecutive_errors, row.receive_errors_total, status()) == (0, 2, "ok")


def test_a_new_process_forgets_the_streak_but_keeps_the_total():
    HealthReporter("sqs").error("boom")
    HealthReporter("sqs").started()
    row = ConsumerHealth.objects.get(name="sqs")
    assert (row.consecutive_errors, row.receive_errors_total) == (0, 1)


def test_a_healthy_consumer_writes_its_heartbeat_at_most_every_interval(django_assert_num_queries):
    reporter = HealthReporter("sqs")
    reporter.started()
    reporter.ok()
    with django_assert_num_queries(0):
        reporter.ok()
        reporter.ok()


def test_a_silent_consumer_is_an_error():
    reporter = HealthReporter("sqs")
    reporter.started()
    reporter.ok()
    with override_settings(CONSUMER_STALE_SECONDS=60):
        ConsumerHealth.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=90))
        assert status() == "error: no heartbeat for 90 s"


def test_a_consumer_without_a_row_is_an_error():
    assert status("r2-queue") == "error: no heartbeat yet (is the consumer running?)"


def test_a_database_outage_does_not_stop_the_reporter(monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("database is down")

    monkeypatch.setattr(ConsumerHealth.objects, "filter", down)
    HealthReporter("sqs").error("boom")  # logged, not raised
