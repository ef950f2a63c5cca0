"""Schemathesis over every operation in the OpenAPI schema: no 5xx, and every answer as documented.

A unit-level fuzz: CKAN is faked with `responses`, the bucket is the moto server over HTTP, and
webhook bodies carry valid signatures so that the parsing behind them is reached.
"""

from __future__ import annotations

import json
import time

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import override_settings
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.uploads import test_api_uploads
from tests.uploads.test_api_uploads import PACKAGE_ID, RESOURCE_ID, ckan_action
from uploads.api_events import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_for

pytestmark = pytest.mark.integration

SECRET = "fuzz-webhook-secret-0123456789"
AZURE_KEY = "fuzz-azure-webhook-key-0123456789"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
fake_ckan = test_api_uploads.fake_ckan


@pytest.fixture
def fuzz_world(storage_world, fake_ckan):
    fake_ckan.post(
        ckan_action("resource_create"), json={"success": True, "result": {"id": RESOURCE_ID, "package_id": PACKAGE_ID}}
    )
    # As Django's test client does: a WSGI request must not close the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        with override_settings(EVENTS_WEBHOOK_SECRET=SECRET, AZURE_EVENTS_WEBHOOK_KEY=AZURE_KEY):
            yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def signs_validly(case) -> bool:
    """Sign the body unless the case is about invalid signature headers (then they stay as drawn)."""
    headers = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    return headers is None or headers.mode.is_positive


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_schema_says(case, fuzz_world):
    if case.path == "/api/v1/events/azure" and signs_validly(case):
        # Event Grid's shared key, as a subscription sends it (a drawn invalid key stays as drawn).
        query = case.meta.components.get(ParameterLocation.QUERY) if case.meta else None
        if query is None or query.mode.is_positive:
            case.query = {**(case.query or {}), "key": AZURE_KEY}
    if case.path.startswith("/api/v1/events/") and not isinstance(case.body, NotSet) and signs_validly(case):
        raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
        timestamp = str(int(time.time()))
        headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature_for(SECRET, timestamp, raw)}
        case.call_and_validate(data=raw, headers=headers, checks=CHECKS)
    else:
        case.call_and_validate(checks=CHECKS)
