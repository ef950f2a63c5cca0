from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from urllib.parse import quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uploads.events import (
    EventParseError,
    ObjectEvent,
    parse_json_bytes,
    parse_r2_body,
    parse_r2_pulled_message,
    parse_s3_body,
)

R2_PUT = {
    "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
    "action": "PutObject",
    "bucket": "my-bucket",
    "object": {"key": "incoming/my file+ü 日本.csv", "size": 65536, "eTag": "c846ff7a18f28c2e262116d6e8719ef0"},
    "eventTime": "2024-05-24T19:36:44.379Z",
}


def s3_body(key: str = "incoming%2Fmy+file%2B%C3%BC+%E6%97%A5%E6%9C%AC.csv", name: str = "ObjectCreated:Put") -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-27T12:44:09.149Z",
                "eventName": name,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "uploads-created",
                    "bucket": {"name": "uploads", "arn": "arn:aws:s3:::uploads"},
                    "object": {
                        "key": key,
                        "size": 8,
                        "eTag": '"e5ebd4c02cefbe7955977c67ada242b7"',
                        "sequencer": "0A1B",
                    },
                },
            }
        ]
    }


def test_it_reads_an_s3_record_and_decodes_its_key():
    [event] = parse_s3_body(s3_body())
    assert event.action == "created"
    assert event.event_name == "ObjectCreated:Put"
    assert event.bucket == "uploads"
    assert event.key == "incoming/my file+ü 日本.csv"
    assert event.size == 8
    assert event.etag == "e5ebd4c02cefbe7955977c67ada242b7"
    assert event.event_time == datetime(2026, 11, 27, 12, 44, 9, 149000, tzinfo=UTC)
    assert event.sequencer == "0A1B"
    assert event.payload["eventSource"] == "aws:s3"


def test_it_reads_s3_deletes_as_deleted():
    [event] = parse_s3_body(s3_body(name="ObjectRemoved:Delete"))
    assert event.action == "deleted"


def test_it_skips_the_s3_test_event():
    assert parse_s3_body({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "x", "Bucket": "uploads"}) == []


def test_it_unwraps_an_sns_envelope():
    [event] = parse_s3_body({"Type": "Notification", "Message": json.dumps(s3_body())})
    assert event.key == "incoming/my file+ü 日本.csv"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Records": "nope"}, "Records must be a list"),
        ({"hello": 1}, "has no Records"),
        (s3_body(name="ObjectRestore:Completed"), "neither ObjectCreated"),
        (s3_body(key=""), "must not be empty"),
        (s3_body(key="%FF%FE"), "not URL-encoded UTF-8"),
        (s3_body(key="a" * 1025), "longer than 1024 bytes"),
        (s3_body(key="a%00b"), "NUL"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_it_explains_what_is_wrong_with_an_s3_body(body, message):
    with pytest.raises(EventParseError, match=message):
        parse_s3_body(body)


def test_it_refuses_a_bad_size_or_time():
    body = s3_body()
    body["Records"][0]["s3"]["object"]["size"] = True
    with pytest.raises(EventParseError, match="size must be a whole number"):
        parse_s3_body(body)
    body = s3_body()
    body["Records"][0]["eventTime"] = "yesterday"
    with pytest.raises(EventParseError, match="not an ISO 8601 time"):
        parse_s3_body(body)


def test_it_reads_an_r2_notification_with_a_raw_key():
    [event] = parse_r2_body(R2_PUT)
    assert event.action == "created"
    assert event.event_name == "PutObject"
    assert event.bucket == "my-bucket"
    assert event.key == "incoming/my file+ü 日本.csv"
    assert event.size == 65536
    assert event.sequencer == ""


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("PutObject", "created"),
        ("CopyObject", "created"),
        ("CompleteMultipartUpload", "created"),
        ("DeleteObject", "deleted"),
        ("LifecycleDeletion", "deleted"),
    ],
)
def test_it_maps_every_r2_action(action, expected):
    body = {"action": action, "bucket": "b", "object": {"key": "k"}, "eventTime": "2024-05-24T19:36:44Z"}
    [event] = parse_r2_body(body)
    assert event.action == expected
    assert event.size is None
    assert event.etag == ""


def test_it_refuses_an_unknown_r2_action():
    with pytest.raises(EventParseError, match="R2 action 'GetObject' is not one of"):
        parse_r2_body({**R2_PUT, "action": "GetObject"})


def test_it_reads_a_list_and_a_worker_batch():
    second = {**R2_PUT, "object": {"key": "other"}}
    assert [e.key for e in parse_r2_body([R2_PUT, second])] == [R2_PUT["object"]["key"], "other"]
    batch = {"messages": [{"id": "1", "body": R2_PUT}, {"id": "2", "body": json.dumps(second)}]}
    assert [e.key for e in parse_r2_body(batch)] == [R2_PUT["object"]["key"], "other"]


def test_it_refuses_a_worker_batch_message_without_a_body():
    with pytest.raises(EventParseError, match=r"messages\[0\] has no body"):
        parse_r2_body({"messages": [{"id": "1"}]})


def test_it_reads_pulled_messages_as_json_text_object_or_base64():
    as_text = {"id": "m1", "body": json.dumps(R2_PUT), "lease_id": "l1", "metadata": {"CF-Content-Type": "json"}}
    as_object = {"id": "m2", "body": R2_PUT, "lease_id": "l2"}
    as_base64 = {"id": "m3", "body": base64.b64encode(json.dumps(R2_PUT).encode()).decode(), "lease_id": "l3"}
    events = [parse_r2_pulled_message(m)[0] for m in (as_text, as_object, as_base64)]
    assert len({e.dedupe_key for e in events}) == 1
    assert events[0].key == R2_PUT["object"]["key"]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"id": "m"}, "has no body"),
        ({"body": "not json, not base64!"}, "neither JSON nor base64"),
        ({"body": base64.b64encode(b"\xff\xfe").decode()}, "base64 but not of JSON"),
        ({"body": "{}", "metadata": {"CF-Content-Type": "v8"}}, "v8"),
        ({"body": 12}, "must be an object or a string"),
    ],
)
def test_it_explains_an_unreadable_pulled_message(message, error):
    with pytest.raises(EventParseError, match=error):
        parse_r2_pulled_message(message)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "empty"),
        (b"\xff", "not UTF-8"),
        (b"{", "not JSON"),
        (b'{"a": NaN}', "NaN is not allowed"),
        (b'{"a": 1e999}', "out of range"),
        (b"[" * 100_000, "nested too deeply|not JSON"),
    ],
)
def test_it_refuses_bodies_that_are_not_strict_json(raw, error):
    with pytest.raises(EventParseError, match=error):
        parse_json_bytes(raw)


def test_the_same_event_via_s3_and_a_webhook_has_the_same_dedupe_key_and_a_different_one_differs():
    a = parse_s3_body(s3_body())[0]
    b = parse_s3_body(json.loads(json.dumps(s3_body())))[0]
    assert a.dedupe_key == b.dedupe_key
    later = s3_body()
    later["Records"][0]["eventTime"] = "2026-11-27T12:44:10Z"
    assert parse_s3_body(later)[0].dedupe_key != a.dedupe_key


def test_equivalent_times_give_the_same_dedupe_key():
    a = parse_r2_body({**R2_PUT, "eventTime": "2024-05-24T19:36:44.379Z"})[0]
    b = parse_r2_body({**R2_PUT, "eventTime": "2024-05-24T21:36:44.379+02:00"})[0]
    assert a.dedupe_key == b.dedupe_key


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)

# Values that look like events but are wrong in places: they reach deeper into the parsers.
field_values = st.one_of(
    json_values, st.sampled_from(["PutObject", "DeleteObject", "ObjectCreated:Put", "2024-05-24T19:36:44Z"])
)
r2_like = st.fixed_dictionaries(
    {},
    optional={
        "action": field_values,
        "bucket": field_values,
        "eventTime": field_values,
        "object": st.fixed_dictionaries({}, optional={"key": field_values, "size": field_values, "eTag": field_values})
        | field_values,
    },
)
s3_like = st.fixed_dictionaries(
    {},
    optional={
        "Records": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "eventName": field_values,
                    "eventTime": field_values,
                    "s3": st.fixed_dictionaries(
                        {},
                        optional={
                            "bucket": st.fixed_dictionaries({}, optional={"name": field_values}) | field_values,
                            "object": st.fixed_dictionaries(
                                {}, optional={"key": field_values, "size": field_values, "eTag": field_values}
                            )
                            | field_values,
                        },
                    )
                    | field_values,
                },
            ),
            max_size=3,
        )
        | field_values,
        "Event": st.just("s3:TestEvent") | field_values,
    },
)
anything = (
    json_values
    | r2_like
    | s3_like
    | st.lists(r2_like, max_size=3)
    | st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"id": st.text(max_size=5), "body": r2_like | json_values | st.text(max_size=30)}
                ),
                max_size=3,
            )
        }
    )
)


def outcome(parse, value):
    try:
        events = parse(value)
    except EventParseError as exc:
        assert str(exc)
        return None
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, ObjectEvent)
        assert event.action in ("created", "deleted")
        assert event.key and len(event.key.encode("utf-8")) <= 1024
        assert len(event.dedupe_key) == 64
        assert event.size is None or event.size >= 0
    return events


@settings(max_examples=400, deadline=None)
@given(anything)
def test_any_json_gives_events_or_a_clear_error(value):
    outcome(parse_s3_body, value)
    outcome(parse_r2_body, value)
    outcome(parse_r2_pulled_message, {"id": "m", "body": value})
    outcome(parse_r2_pulled_message, {"id": "m", "body": json.dumps(value)})
    outcome(parse_r2_pulled_message, value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_give_json_or_a_clear_error(raw):
    try:
        value = parse_json_bytes(raw)
    except EventParseError as exc:
        assert str(exc)
        return
    outcome(parse_s3_body, value)
    outcome(parse_r2_body, value)


keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=200
).filter(lambda k: len(k.encode("utf-8")) <= 1024)


@settings(max_examples=300, deadline=None)
@given(keys | st.sampled_from(["my file.csv", "a+b.csv", "a%2Bb", "日本/ü ß+é.csv", " leading", "100%"]))
def test_keys_with_spaces_plus_and_unicode_round_trip(key):
    s3 = s3_body(key=quote_plus(key, safe=""))
    assert parse_s3_body(s3)[0].key == key
    s3_aws_style = s3_body(key=quote_plus(key, safe="/"))
    assert parse_s3_body(s3_aws_style)[0].key == key
    r2 = {**R2_PUT, "object": {"key": key, "size": 1}}
    assert parse_r2_body(r2)[0].key == key
    pulled = {"id": "m", "body": base64.b64encode(json.dumps(r2).encode()).decode()}
    assert parse_r2_pulled_message(pulled)[0].key == key
