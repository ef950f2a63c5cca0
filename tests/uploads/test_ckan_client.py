from __future__ import annotations

import pytest
import requests
import responses
from django.test import override_settings

from uploads import ckan

URL = "http://ckan.example.test"


@pytest.fixture(autouse=True)
def _ckan_url():
    with override_settings(CKAN_URL=URL, CKAN_TIMEOUT_SECONDS=2):
        yield


@responses.activate
def test_it_sends_the_raw_token_in_authorization_and_returns_the_result():
    responses.post(f"{URL}/api/3/action/resource_show", json={"success": True, "result": {"id": "r1"}})
    assert ckan.resource_show("r1", token="tok-123") == {"id": "r1"}
    assert responses.calls[0].request.headers["Authorization"] == "tok-123"


@responses.activate
def test_it_sends_no_authorization_header_without_a_token():
    responses.post(f"{URL}/api/3/action/resource_show", json={"success": True, "result": {}})
    ckan.resource_show("r1", token=None)
    assert "Authorization" not in responses.calls[0].request.headers


@pytest.mark.parametrize(
    ("status", "body", "error_type", "transient"),
    [
        (
            403,
            {"success": False, "error": {"__type": "Authorization Error", "message": "Access denied"}},
            ckan.CkanNotAuthorized,
            False,
        ),
        (
            404,
            {"success": False, "error": {"__type": "Not Found Error", "message": "Not found"}},
            ckan.CkanNotFound,
            False,
        ),
        (
            409,
            {"success": False, "error": {"__type": "Validation Error", "size": ["Invalid integer"]}},
            ckan.CkanValidationError,
            False,
        ),
        (400, "Bad request - Action name not known: nope", ckan.CkanBadRequest, False),
        (429, {"success": False}, ckan.CkanUnavailable, True),
        (
            500,
            {"success": False, "error": {"__type": "Search Index Error", "message": "down"}},
            ckan.CkanUnavailable,
            True,
        ),
        (502, None, ckan.CkanUnavailable, True),
    ],
)
@responses.activate
def test_it_turns_ckan_error_bodies_into_typed_errors(status, body, error_type, transient):
    if body is None:
        responses.post(f"{URL}/api/3/action/resource_patch", body="<html>bad gateway</html>", status=status)
    else:
        responses.post(f"{URL}/api/3/action/resource_patch", json=body, status=status)
    with pytest.raises(error_type) as exc:
        ckan.resource_patch("r1", {"url": "x"}, token="t")
    assert exc.value.status == status
    assert exc.value.transient is transient


@responses.activate
def test_it_keeps_validation_field_errors():
    responses.post(
        f"{URL}/api/3/action/resource_patch",
        status=409,
        json={"success": False, "error": {"__type": "Validation Error", "size": ["Invalid integer"]}},
    )
    with pytest.raises(ckan.CkanValidationError) as exc:
        ckan.resource_patch("r1", {"size": "abc"}, token="t")
    assert exc.value.details == {"size": ["Invalid integer"]}
    assert "size: Invalid integer" in exc.value.message


@responses.activate
def test_it_reports_timeouts_and_refused_connections_as_unavailable():
    responses.post(f"{URL}/api/3/action/status_show", body=requests.Timeout())
    with pytest.raises(ckan.CkanUnavailable, match="timed out"):
        ckan.call_action("status_show", token=None)


def test_it_reports_an_unreachable_site_as_unavailable():
    with override_settings(CKAN_URL="http://127.0.0.1:9"), pytest.raises(ckan.CkanUnavailable):
        ckan.call_action("status_show", token=None)


def test_it_refuses_to_call_without_a_configured_site():
    with override_settings(CKAN_URL=""), pytest.raises(ckan.CkanNotConfigured):
        ckan.call_action("status_show", token=None)


def test_its_session_reads_the_proxy_and_ca_variables_once_when_it_is_built(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.test:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/site-ca.pem")
    session = ckan._build_session()
    assert requests.utils.select_proxy(f"{URL}/api/3/action/package_show", session.proxies) == (
        "http://proxy.example.test:3128"
    )
    assert session.verify == "/etc/ssl/certs/site-ca.pem"
    assert session.trust_env is False  # not read again on every call


def test_its_session_goes_direct_to_a_site_in_no_proxy(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.test:3128")
    monkeypatch.setenv("NO_PROXY", "ckan.example.test")
    session = ckan._build_session()
    assert requests.utils.select_proxy(f"{URL}/api/3/action/package_show", session.proxies) is None
