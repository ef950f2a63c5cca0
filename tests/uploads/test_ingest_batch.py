"""Set-based ingest: a body, a queue batch or a list of events costs a constant number of statements."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from django_q.tasks import async_task

from tests.support.factories import make_upload as build_upload
from uploads.api_events import signature_for
from uploads.consumers.recording import Message, record_messages
from uploads.events import parse_json_bytes, parse_r2_body, parse_r2_pulled_message, parse_s3_body
from uploads.models import EventStatus, StorageEvent, Upload, UploadState
from uploads.services import dispatch, ingest

BUCKET = "ckan-uploads"
SECRET = "webhook-secret-0123456789"


def make_upload(state: str = UploadState.ISSUED, **fields) -> Upload:
    return build_upload(filename="f.csv", bucket=BUCKET, state=state, **fields)


def r2(key: str, *, action: str = "PutObject", etag: str = "abc", when: str = "2026-01-02T03:04:05Z") -> dict:
    obj = {"key": key, **({"size": 8, "eTag": etag} if action == "PutObject" else {})}
    return {"action": action, "bucket": BUCKET, "object": obj, "eventTime": when}


def mixed_body(n: int) -> tuple[list[dict], list[Upload]]:
    """n R2 notifications: 80% for issued uploads, 10% unmatched, 10% repeats of earlier ones."""
    uploads = [make_upload() for _ in range(n * 8 // 10)]
    body = [r2(u.key) for u in uploads] + [r2(f"elsewhere/{uuid.uuid4()}.csv") for _ in range(n // 10)]
    body += body[: n - len(body)]
    return body, uploads


def link_tasks() -> list[tuple[str, str]]:
    """(upload id, trigger) of the link tasks in the ORM broker's table."""
    out = []
    for row in OrmQ.objects.all():
        task = SignedPackage.loads(row.payload)
        assert task["func"] == "uploads.tasks.link_upload_task"
        out.append((task["args"][0], task["args"][1]))
    return sorted(out)


def count_statements(record, django_capture_on_commit_callbacks) -> int:
    """SQL statements run by ``record()``, the link tasks pushed after commit included."""
    with CaptureQueriesContext(connection) as ctx, django_capture_on_commit_callbacks(execute=True):
        record()
    return len(ctx.captured_queries)


@pytest.mark.django_db
def test_recording_a_list_costs_the_same_statements_for_10_and_100_events(django_capture_on_commit_callbacks):
    counts = {}
    for n in (10, 100):
        body, uploads = mixed_body(n)
        events = parse_r2_body(body)
        # One of them was delivered before: counted, not moved again.
        ingest.record_event(source="r2-queue", event=events[0])
        OrmQ.objects.all().delete()
        counts[n] = count_statements(
            lambda events=events: ingest.record_batch(source="r2-queue", items=events),
            django_capture_on_commit_callbacks,
        )
        assert sorted(str(u.pk) for u in uploads[1:]) == [upload_id for upload_id, _ in link_tasks()]
        assert {t for _, t in link_tasks()} == {"event"}
        assert StorageEvent.objects.get(key=uploads[0].key).deliveries == 1 + sum(
            e["object"]["key"] == uploads[0].key for e in body
        )
        OrmQ.objects.all().delete()
    assert counts[10] == counts[100], counts
    # lookup, upsert, update, task insert (+ savepoint statements where the test runs inside a transaction)
    assert counts[100] <= 6, counts


@pytest.mark.django_db
def test_a_webhook_body_costs_the_same_statements_for_10_and_100_events(client, django_capture_on_commit_callbacks):
    counts = {}
    with override_settings(EVENTS_WEBHOOK_SECRET=SECRET):
        for n in (10, 100):
            body, uploads = mixed_body(n)
            raw = json.dumps({"messages": [{"id": str(i), "body": e} for i, e in enumerate(body)]}).encode()
            ts = str(int(time.time()))
            headers = {"HTTP_X_SIGNATURE_TIMESTAMP": ts, "HTTP_X_SIGNATURE": signature_for(SECRET, ts, raw)}
            answers: list = []

            def push(raw=raw, headers=headers, answers=answers):
                answers.append(client.post("/api/v1/events/r2", data=raw, content_type="application/json", **headers))

            counts[n] = count_statements(push, django_capture_on_commit_callbacks)
            assert answers[0].status_code == 202, answers[0].content
            assert answers[0].json() == {"received": n, "duplicates": n - len(uploads) - n // 10, "unmatched": n // 10}
            assert Upload.objects.filter(pk__in=[u.pk for u in uploads], state=UploadState.UPLOADED).count() == len(
                uploads
            )
            assert len(link_tasks()) == len(uploads)
            OrmQ.objects.all().delete()
    assert counts[10] == counts[100], counts


def pulled(body: str) -> Message:
    return Message(raw_body=body, parse=lambda: parse_r2_pulled_message({"body": body}))


@pytest.mark.django_db
def test_a_queue_batch_costs_the_same_statements_for_10_and_100_messages(django_capture_on_commit_callbacks):
    counts = {}
    for n in (10, 100):
        body, _ = mixed_body(n)
        messages = [pulled(json.dumps(e)) for e in body]
        messages[-1] = pulled("not an event")
        tallies: list = []
        counts[n] = count_statements(
            lambda messages=messages, tallies=tallies: tallies.extend(
                record_messages(source="r2-queue", messages=messages)
            ),
            django_capture_on_commit_callbacks,
        )
        assert len(tallies) == n and sum(t.failed for t in tallies) == 0
        assert sum(t.unparseable for t in tallies) == 1
        assert sum(t.unmatched for t in tallies) == n // 10
        assert StorageEvent.objects.filter(status=EventStatus.UNPARSEABLE, raw_body="not an event").exists()
        OrmQ.objects.all().delete()
    assert counts[10] == counts[100], counts


@pytest.mark.django_db
def test_repeats_inside_one_batch_are_duplicates_counted_as_deliveries(enqueued, django_capture_on_commit_callbacks):
    upload = make_upload()
    [event] = parse_r2_body(r2(upload.key))
    with django_capture_on_commit_callbacks(execute=True):
        results = ingest.record_batch(source="webhook", items=[event, event, event])
    assert [r.duplicate for r in results] == [False, True, True]
    assert StorageEvent.objects.get().deliveries == 3
    assert enqueued == [(str(upload.id), "event")]
    with django_capture_on_commit_callbacks(execute=True):
        again = ingest.record_batch(source="webhook", items=[event, event])
    assert [r.duplicate for r in again] == [True, True]
    assert StorageEvent.objects.get().deliveries == 5
    assert enqueued == [(str(upload.id), "event")]


@pytest.mark.django_db
def test_a_batch_applies_one_uploads_events_in_the_order_they_happened(enqueued):
    """A delete older than the PUT, delivered after it in the same body, leaves no deleted flag."""
    upload = make_upload()
    body = [
        r2(upload.key, when="2026-01-02T04:00:00Z"),
        r2(upload.key, action="DeleteObject", when="2026-01-02T03:00:00Z"),
    ]
    ingest.record_batch(source="webhook", items=parse_r2_body(body))
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert upload.object_deleted_at is None
    assert upload.object_seen_at == datetime(2026, 1, 2, 4, tzinfo=UTC)

    later = make_upload()
    body = [
        r2(later.key, action="DeleteObject", when="2026-01-02T05:00:00Z"),
        r2(later.key, when="2026-01-02T04:00:00Z"),
    ]
    ingest.record_batch(source="webhook", items=parse_r2_body(body))
    later.refresh_from_db()
    assert later.object_deleted_at == datetime(2026, 1, 2, 5, tzinfo=UTC)


def s3_record(key: str, *, name: str, sequencer: str, etag: str = "") -> dict:
    obj = {"key": key, "sequencer": sequencer, **({"size": 8, "eTag": etag} if etag else {})}
    return {
        "eventName": name,
        "eventTime": "2026-01-02T03:04:05Z",  # the same second: only the sequencer tells them apart
        "s3": {"bucket": {"name": BUCKET}, "object": obj},
    }


@pytest.mark.django_db
def test_s3_sequencers_order_events_of_the_same_second(enqueued):
    upload = make_upload(UploadState.LINKED, object_etag="old")
    records = [
        s3_record(upload.key, name="ObjectCreated:Put", sequencer="0055AED6DCD90281E6", etag="new"),
        s3_record(upload.key, name="ObjectRemoved:Delete", sequencer="0055AED6DCD9028", etag=""),
    ]
    # Right-padded, "0055AED6DCD9028" is "0055AED6DCD902800...": the delete came first.
    ingest.record_batch(source="sqs", items=parse_s3_body({"Records": records}))
    upload.refresh_from_db()
    assert (upload.state, upload.object_etag, upload.object_deleted_at) == (UploadState.UPLOADED, "new", None)


@pytest.mark.django_db
def test_an_upload_that_moves_twice_in_a_batch_gets_one_link_task(enqueued, django_capture_on_commit_callbacks):
    upload = make_upload()
    body = [
        r2(upload.key, etag="one", when="2026-01-02T03:00:00Z"),
        r2(upload.key, etag="two", when="2026-01-02T03:01:00Z"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        ingest.record_batch(source="webhook", items=parse_r2_body(body))
    upload.refresh_from_db()
    assert (upload.state, upload.object_etag) == (UploadState.UPLOADED, "two")
    assert enqueued == [(str(upload.id), "event")]


@pytest.mark.django_db(transaction=True)
def test_a_message_the_database_refuses_costs_a_retry_of_itself_not_of_its_batch(enqueued, monkeypatch):
    good = make_upload()
    poison = make_upload()
    real = ingest.record_batch

    def refusing(*, source, items):
        if any(getattr(item, "key", "") == poison.key for item in items):
            raise OperationalError("the database refuses this one")
        return real(source=source, items=items)

    monkeypatch.setattr(ingest, "record_batch", refusing)
    messages = [sqs_message(key) for key in (good.key, poison.key)]
    tallies = record_messages(source="sqs", messages=messages)
    assert [(t.events, t.failed) for t in tallies] == [(1, 0), (0, 1)]
    assert list(StorageEvent.objects.values_list("key", flat=True)) == [good.key]
    assert enqueued == [(str(good.id), "event")]


def sqs_message(key: str) -> Message:
    raw = json.dumps(s3_body(key))
    return Message(raw_body=raw, parse=lambda: parse_s3_body(parse_json_bytes(raw)), id=key)


def s3_body(key: str) -> dict:
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-01-02T03:04:05Z",
                "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": 8, "eTag": "abc"}},
            }
        ]
    }


@pytest.mark.django_db
def test_link_tasks_go_to_the_orm_broker_in_one_insert():
    ids = [uuid.uuid4() for _ in range(50)]
    with CaptureQueriesContext(connection) as ctx:
        dispatch.send_link_tasks([(upload_id, "event", "") for upload_id in ids])
    assert len([q for q in ctx.captured_queries if "django_q_ormq" in q["sql"]]) == 1
    assert link_tasks() == sorted((str(i), "event") for i in ids)


def test_a_link_package_is_what_async_task_signs_for_the_same_link():
    class Keep:
        list_key = "keep"
        packages: list[str] = []

        def enqueue(self, package: str) -> None:
            self.packages.append(package)

    upload_id = uuid.uuid4()
    keep = Keep()
    async_task(
        dispatch.LINK_TASK, str(upload_id), "event", "bob", task_name=f"link {upload_id}", group="link", broker=keep
    )
    theirs = SignedPackage.loads(keep.packages[0])
    ours = SignedPackage.loads(dispatch.link_package(upload_id, "event", "bob", started=theirs["started"]))
    assert len(ours.pop("id")) == len(theirs.pop("id")) == 32
    assert ours == theirs


REDIS = ("127.0.0.1", 6379)


@pytest.fixture
def redis_broker(monkeypatch):
    """A django-q2 Redis broker on its own list, so no running cluster ever takes these tasks."""
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError as exc:
        reason = f"Redis is not reachable at {REDIS[0]}:{REDIS[1]} ({exc})"
        if os.environ.get("REQUIRE_REDIS"):
            pytest.fail(reason)
        pytest.skip(reason)
    from django_q.brokers.redis_broker import Redis
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "REDIS", os.environ.get("TEST_REDIS_URL", f"redis://{REDIS[0]}:{REDIS[1]}/11"))
    broker = Redis(list_key=f"test-ingest-{uuid.uuid4()}")
    yield broker
    broker.delete_queue()


def test_link_tasks_go_to_redis_in_one_command(redis_broker, monkeypatch):
    sent: list[tuple] = []
    real_rpush = redis_broker.connection.rpush

    def rpush(*args):
        sent.append(args)
        return real_rpush(*args)

    monkeypatch.setattr(redis_broker.connection, "rpush", rpush)
    monkeypatch.setattr(dispatch, "get_broker", lambda: redis_broker)
    ids = [uuid.uuid4() for _ in range(20)]
    dispatch.send_link_tasks([(upload_id, "replay", "alice") for upload_id in ids])
    assert len(sent) == 1
    assert redis_broker.queue_size() == 20
    tasks = [SignedPackage.loads(redis_broker.dequeue()[0][1]) for _ in ids]
    assert [t["args"] for t in tasks] == [(str(i), "replay", "alice") for i in ids]
    assert {t["group"] for t in tasks} == {"link"}


@pytest.mark.django_db(transaction=True)
def test_the_same_new_event_recorded_by_two_processes_at_once_is_one_row_and_one_link():
    """Two consumers (threads with their own connections) race to record one new event."""
    import threading

    from django.db import connections

    upload = make_upload()
    [event] = parse_r2_body(r2(upload.key))
    barrier = threading.Barrier(2)
    results: list = []
    errors: list = []

    def consumer() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(ingest.record_batch(source="webhook", items=[event, event])[0])
        except Exception as exc:  # the assertion below shows it
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=consumer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(r.duplicate for r in results) == [False, True]
    assert StorageEvent.objects.get().deliveries == 4
    assert len(link_tasks()) == 1
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
