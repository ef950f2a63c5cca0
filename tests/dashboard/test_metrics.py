from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.dashboard.conftest import make_upload
from uploads.consumers.health import HealthReporter
from uploads.models import EventAction, EventSource, EventStatus, LinkAttempt, LinkOutcome, StorageEvent, UploadState


@pytest.mark.django_db
def test_it_exposes_ledger_counts_in_prometheus_text_format(client):
    upload = make_upload(state=UploadState.UPLOADED, issued_at=timezone.now() - timedelta(seconds=600))
    make_upload(state=UploadState.FAILED)
    StorageEvent.objects.create(
        source=EventSource.SQS, dedupe_key=uuid.uuid4().hex, status=EventStatus.UNMATCHED, action=EventAction.CREATED
    )
    LinkAttempt.objects.create(upload=upload, trigger="event", outcome=LinkOutcome.RETRY)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = response.content.decode().splitlines()
    assert 'ckanrec_uploads{state="uploaded"} 1' in lines
    assert 'ckanrec_uploads{state="failed"} 1' in lines
    assert 'ckanrec_uploads{state="linked"} 0' in lines
    assert 'ckanrec_storage_events_total{status="unmatched"} 1' in lines
    assert 'ckanrec_link_attempts_total{outcome="retry"} 1' in lines
    age = next(line for line in lines if line.startswith("ckanrec_oldest_pending_upload_age_seconds "))
    assert 599 <= float(age.split()[1]) < 700
    assert "# TYPE ckanrec_uploads gauge" in lines


@pytest.mark.django_db
def test_it_refuses_post(client):
    assert client.post("/metrics").status_code == 405


@pytest.mark.django_db
def test_it_exposes_each_consumers_errors_and_whether_it_is_up(client):
    sqs = HealthReporter("sqs")
    sqs.started()
    sqs.error("could not receive from SQS: EndpointConnectionError")
    sqs.error("could not receive from SQS: EndpointConnectionError")
    r2 = HealthReporter("r2-queue")
    r2.started()
    r2.ok()
    lines = client.get("/metrics").content.decode().splitlines()
    assert 'ckanrec_consumer_receive_errors_total{consumer="sqs"} 2' in lines
    assert 'ckanrec_consumer_consecutive_errors{consumer="sqs"} 2' in lines
    assert 'ckanrec_consumer_up{consumer="sqs"} 0' in lines
    assert 'ckanrec_consumer_up{consumer="r2-queue"} 1' in lines
    assert 'ckanrec_consumer_receive_errors_total{consumer="r2-queue"} 0' in lines
    assert "# TYPE ckanrec_consumer_receive_errors_total counter" in lines
    age = next(line for line in lines if line.startswith('ckanrec_consumer_heartbeat_age_seconds{consumer="sqs"} '))
    assert 0 <= float(age.split()[1]) < 60
