"""The service's upload API (issue, part URLs, parts held, complete, abort, status), one method per call."""

from __future__ import annotations

import threading
from typing import Any

import requests

from ckan_upload import __version__
from ckan_upload.retry import Backoff, is_retryable_status

TIMEOUT = (10, 60)
# The store assembles a multipart object while `complete` waits: S3 says it can take minutes.
COMPLETE_TIMEOUT = (10, 900)
MAX_PART_NUMBERS = 1000


class ServiceError(Exception):
    """The service answered with an error (``status`` is 0 when it could not be reached)."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})" if status else message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


def api_base(server: str) -> str:
    """The API root for a server URL, with or without the /api/v1 suffix."""
    server = server.rstrip("/")
    return server if server.endswith("/api/v1") else f"{server}/api/v1"


class Service:
    """One CKAN user's conversation with the service; API calls are retried on network errors and 5xx."""

    def __init__(self, server: str, token: str, *, cancel: threading.Event, backoff: Backoff | None = None) -> None:
        self.base = api_base(server)
        self._token = token
        self._cancel = cancel
        self._backoff = backoff or Backoff(base=0.5, cap=10, attempts=5)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"ckan-upload/{__version__}"

    def _call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        timeout: tuple[float, float] = TIMEOUT,
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                response = self._session.request(
                    method, url, json=json, headers={"Authorization": self._token}, timeout=timeout
                )
            except requests.RequestException as exc:
                if attempt + 1 >= self._backoff.attempts:
                    raise ServiceError(0, "unreachable", f"cannot reach the service at {self.base}: {exc}") from exc
            else:
                if response.status_code in ok:
                    body: dict[str, Any] = response.json() if response.content else {}
                    return body
                if not is_retryable_status(response.status_code) or attempt + 1 >= self._backoff.attempts:
                    raise self._error(response)
            self._backoff.sleep(attempt, self._cancel)
            attempt += 1

    @staticmethod
    def _error(response: requests.Response) -> ServiceError:
        try:
            body = response.json()
            error = body.get("error") or {}
        except ValueError:
            body, error = {}, {}
        code = str(error.get("code") or f"http_{response.status_code}")
        message = str(error.get("message") or response.reason or "the service refused the request")
        return ServiceError(response.status_code, code, message, error if isinstance(error, dict) else {})

    def issue(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /uploads for an existing resource: the upload's plan."""
        return self._call("POST", f"{self.base}/uploads", json=payload, ok=(201,))

    def create_resource(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /resources: a new CKAN resource and its upload's plan."""
        return self._call("POST", f"{self.base}/resources", json=payload, ok=(201,))

    def part_urls(self, upload_id: str, part_numbers: list[int]) -> list[dict[str, Any]]:
        """Fresh presigned URLs for these parts (asked for in pages the service accepts)."""
        parts: list[dict[str, Any]] = []
        for start in range(0, len(part_numbers), MAX_PART_NUMBERS):
            page = part_numbers[start : start + MAX_PART_NUMBERS]
            answer = self._call("POST", f"{self.base}/uploads/{upload_id}/parts", json={"part_numbers": page})
            parts.extend(answer["parts"])
        return parts

    def parts_held(self, upload_id: str) -> dict[str, Any]:
        """GET /uploads/<id>/parts: the parts the bucket already holds."""
        return self._call("GET", f"{self.base}/uploads/{upload_id}/parts")

    def complete(self, upload_id: str, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """POST /uploads/<id>/complete (with the part ETags for a multipart upload)."""
        body = {"parts": parts} if parts is not None else None
        return self._call(
            "POST", f"{self.base}/uploads/{upload_id}/complete", json=body, ok=(200, 202), timeout=COMPLETE_TIMEOUT
        )

    def abort(self, upload_id: str) -> dict[str, Any]:
        """DELETE /uploads/<id>: give up an unfinished upload."""
        return self._call("DELETE", f"{self.base}/uploads/{upload_id}")

    def status(self, upload_id: str) -> dict[str, Any]:
        """GET /uploads/<id> as its owner: the full status."""
        return self._call("GET", f"{self.base}/uploads/{upload_id}")
