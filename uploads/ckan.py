"""The only module that talks to CKAN: one HTTP session, timeouts, typed errors.

CKAN quirks handled here (measured, see docs/architecture.md):
- only ``Authorization: <raw token>`` authenticates; anything else is anonymous;
- a bad or missing token never gives 401: reads succeed as anonymous, writes get 403;
- error bodies are ``{"success": false, "error": {"__type": ..., "message": ...}}``,
  except for an unknown action (400 with a bare JSON string).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


class CkanError(Exception):
    """CKAN refused a call; ``status`` is the HTTP status, 0 when there was no answer."""

    transient = False

    def __init__(self, message: str, *, status: int = 0, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or {}


class CkanNotAuthorized(CkanError):
    """403: the token (or anonymous) may not do this."""


class CkanNotFound(CkanError):
    """404: the resource or dataset does not exist (or was deleted)."""


class CkanValidationError(CkanError):
    """409: CKAN rejected the values sent; ``details`` holds the field errors."""


class CkanBadRequest(CkanError):
    """Another 4xx, such as an unknown action."""


class CkanUnavailable(CkanError):
    """No usable answer: connection error, timeout, 429 or 5xx. Worth retrying."""

    transient = True


class CkanNotConfigured(CkanError):
    """CKAN_URL is not set."""


def _build_session() -> requests.Session:
    session = requests.Session()
    # With trust_env, requests reads the proxy variables from the environment on every call
    # (0.17 ms a call, measured: docs/benchmarks.md "Issuance"); the environment does not change
    # while the process runs, so the proxies and the CA bundle are read once, here.
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(settings.CKAN_URL) if settings.CKAN_URL else {}
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    # Retry only failures to connect: a POST that reached CKAN must not be sent twice here;
    # the link service decides on retries with its own backoff.
    retry = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.2, allowed_methods=None)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "ckan-upload-reconciler/1"
    return session


_local = threading.local()


def _session() -> requests.Session:
    # requests.Session is not documented as thread-safe: one per thread, reused for keep-alive.
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = _build_session()
    return session


def _error_from_response(action: str, response: requests.Response) -> CkanError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind = str(error.get("__type", ""))
        message = str(error.get("message") or kind or f"HTTP {status}")
        details = {k: v for k, v in error.items() if k not in {"__type", "message"}}
    else:
        kind = ""
        message = str(body) if isinstance(body, str) else f"HTTP {status} from CKAN {action}"
        details = {}
    if status == 429 or status >= 500:
        return CkanUnavailable(f"CKAN {action} answered {status}: {message}", status=status, details=details)
    if status == 403:
        return CkanNotAuthorized(message, status=status)
    if status == 404:
        return CkanNotFound(message, status=status)
    if status == 409 or kind == "Validation Error":
        if details and message == kind:
            message = "; ".join(
                f"{field}: {', '.join(map(str, errs)) if isinstance(errs, list) else errs}"
                for field, errs in details.items()
            )
        return CkanValidationError(message, status=status, details=details)
    return CkanBadRequest(message, status=status, details=details)


def call_action(action: str, data: dict[str, Any] | None = None, *, token: str | None) -> Any:
    """Call a CKAN action with POST and return its ``result``; raise a typed ``CkanError``."""
    if not settings.CKAN_URL:
        raise CkanNotConfigured("CKAN_URL is not configured")
    url = f"{settings.CKAN_URL}/api/3/action/{action}"
    headers = {"Authorization": token} if token else {}
    try:
        response = _session().post(url, json=data or {}, headers=headers, timeout=settings.CKAN_TIMEOUT_SECONDS)
    except requests.Timeout:
        raise CkanUnavailable(f"CKAN {action} timed out after {settings.CKAN_TIMEOUT_SECONDS} s") from None
    except requests.RequestException as exc:
        raise CkanUnavailable(f"CKAN could not be reached for {action}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise _error_from_response(action, response)
    try:
        body = response.json()
    except ValueError:
        raise CkanUnavailable(f"CKAN {action} answered 200 with a body that is not JSON", status=200) from None
    if not isinstance(body, dict) or not body.get("success"):
        raise _error_from_response(action, response)
    return body.get("result")


def resource_show(resource_id: str, *, token: str | None) -> dict[str, Any]:
    """Return a resource as CKAN shows it to that token."""
    return call_action("resource_show", {"id": resource_id}, token=token)


def resource_patch(resource_id: str, fields: dict[str, Any], *, token: str | None) -> dict[str, Any]:
    """Change only the given fields of a resource (``resource_update`` would wipe the rest)."""
    return call_action("resource_patch", {"id": resource_id, **fields}, token=token)


def resource_create(fields: dict[str, Any], *, token: str | None) -> dict[str, Any]:
    """Create a resource in a dataset."""
    return call_action("resource_create", fields, token=token)


def package_show(package_id: str, *, token: str | None) -> dict[str, Any]:
    """Return a dataset with its resources."""
    return call_action("package_show", {"id": package_id}, token=token)


def file_register(location: str, storage: str, *, token: str | None) -> dict[str, Any]:
    """Register an object already in a CKAN 2.12 file storage (CKAN analyses it: size, hash, type)."""
    return call_action("file_register", {"location": location, "storage": storage}, token=token)


def file_by_location(
    location: str, storage: str, *, owner_type: str, owner_id: str, token: str | None, page_size: int = 100
) -> dict[str, Any] | None:
    """The owner's registered file at ``location`` in ``storage``, or None.

    CKAN 2.12.0 has no search by location in its API (``file_search`` is not an action), so the
    owner's files are listed (``file_owner_scan``; an empty ``owner_id`` of type ``user`` is the
    caller) and compared. Only a retry of a link that stopped after ``file_register`` needs this.
    """
    start = 0
    while True:
        page = call_action(
            "file_owner_scan",
            {"owner_type": owner_type, "owner_id": owner_id, "start": start, "rows": page_size},
            token=token,
        )
        results = page.get("results") or []
        for item in results:
            if item.get("location") == location and item.get("storage") == storage:
                return dict(item)
        start += len(results)
        if not results or start >= int(page.get("count") or 0):
            return None


def file_ownership_transfer(file_id: str, *, owner_type: str, owner_id: str, token: str | None) -> dict[str, Any]:
    """Make ``owner_id`` the file's owner (CKAN then grants the file's access through the owner's)."""
    data = {"id": file_id, "owner_type": owner_type, "owner_id": owner_id, "force": True}
    return call_action("file_ownership_transfer", data, token=token)


def service_token() -> str:
    """The token this service links with; never a client's."""
    return settings.CKAN_API_TOKEN


def authorize_resource_update(resource_id: str, *, token: str) -> dict[str, Any]:
    """Prove that ``token`` may update the resource, in one round trip, and return the resource.

    CKAN has no "may I?" action and reads succeed for anyone who can view, so the probe is a
    ``resource_patch`` carrying only the id: CKAN authorises it as a resource update (403 when
    refused, 404 when missing) and, since 2.10, writes nothing when nothing changed.
    """
    return resource_patch(resource_id, {}, token=token)


def whoami(*, token: str) -> dict[str, Any]:
    """The CKAN user a token belongs to (``user_show`` without an id shows the caller)."""
    return call_action("user_show", {}, token=token)


def group_show(kind: str, id_or_name: str, *, token: str | None) -> dict[str, Any]:
    """An organization or group (``kind``) as CKAN shows it to that token, without its datasets and members."""
    return call_action(
        f"{kind}_show",
        {"id": id_or_name, "include_datasets": False, "include_users": False, "include_followers": False},
        token=token,
    )


def group_patch(kind: str, id_or_name: str, fields: dict[str, Any], *, token: str | None) -> dict[str, Any]:
    """Change only the given fields of an organization or group (``{kind}_patch`` keeps every other one)."""
    return call_action(f"{kind}_patch", {"id": id_or_name, **fields}, token=token)


def authorize_group_update(kind: str, id_or_name: str, *, token: str) -> dict[str, Any]:
    """Prove that ``token`` may update the organization or group, writing nothing; return it.

    CKAN authorises ``organization_patch`` / ``group_patch`` as ``organization_update`` /
    ``group_update`` (``has_user_permission_for_group_or_org(..., 'update')``: a sysadmin, or an
    admin of it or of a parent), and only then validates. So the probe sends a value every schema
    refuses (an empty ``name``): 403 when the right is missing, 409 (nothing written) when it is
    there. A 404 from the show before it means no such organization or group.
    """
    shown = group_show(kind, id_or_name, token=token)
    try:
        group_patch(kind, str(shown["id"]), {"name": ""}, token=token)
    except CkanValidationError:
        return shown
    # Not reachable on any CKAN that validates names; never treat it as a permission.
    raise CkanBadRequest(f"CKAN accepted an empty {kind} name: cannot tell whether the token may update it")
