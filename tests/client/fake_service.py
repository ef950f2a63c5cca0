"""A small in-memory stand-in for the service's upload API and its bucket, over real HTTP (unit tests only)."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "owner-token"


@dataclass
class FakeUpload:
    id: str
    resource_id: str
    size: int
    multipart: bool
    part_size: int | None
    part_count: int | None
    sha256: str | None
    state: str = "issued"
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    object: bytes | None = None
    linked_url: str | None = None
    last_error: str | None = None


class FakeService:
    """The contract of docs/client.md, enough to drive the client; faults are injected per test."""

    def __init__(self, *, part_size: int = 1024, threshold: int = 4096, first_page: int = 100) -> None:
        self.part_size = part_size
        self.threshold = threshold
        self.first_page = first_page
        self.uploads: dict[str, FakeUpload] = {}
        self.resources_created: list[dict[str, Any]] = []
        self.issued: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.part_puts: Counter[int] = Counter()
        self.completes: list[dict[str, Any] | None] = []
        # Faults: statuses answered (once each) to the next PUTs of a part, URL generations refused.
        self.put_faults: dict[int, list[int]] = {}
        self.refused_generation: set[int] = set()
        self.not_uploaded_answers = 0
        self.drop_part_after_put: int | None = None
        self.gone: set[str] = set()
        self.link_outcome = "linked"
        self._generation = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- helpers for tests

    def only_upload(self) -> FakeUpload:
        [upload] = self.uploads.values()
        return upload

    def hold_parts(self, upload_id: str, data: bytes, numbers: list[int]) -> None:
        """Put parts into the bucket as an earlier, interrupted run would have."""
        upload = self.uploads[upload_id]
        assert upload.part_size is not None
        for number in numbers:
            chunk = data[(number - 1) * upload.part_size : number * upload.part_size]
            upload.parts[number] = (chunk, f'"{hashlib.md5(chunk).hexdigest()}"')  # noqa: S324

    # --- the API

    def _part_url(self, upload: FakeUpload, number: int) -> dict[str, Any]:
        self._generation += 1
        assert upload.part_size is not None and upload.part_count is not None
        length = upload.part_size if number < upload.part_count else upload.size - (number - 1) * upload.part_size
        return {
            "part_number": number,
            "url": f"{self.url}/store/{upload.id}/{number}?gen={self._generation}",
            "headers": {"Content-Length": str(length)},
            "expires_at": "2999-01-01T00:00:00Z",
        }

    def _issue(self, body: dict[str, Any], resource_id: str) -> dict[str, Any]:
        size = int(body["size"])
        multipart = body.get("multipart")
        multipart = size > self.threshold if multipart is None else bool(multipart)
        upload = FakeUpload(
            id=str(uuid.uuid4()),
            resource_id=resource_id,
            size=size,
            multipart=multipart,
            part_size=self.part_size if multipart else None,
            part_count=max(1, -(-size // self.part_size)) if multipart else None,
            sha256=body.get("sha256"),
        )
        self.uploads[upload.id] = upload
        self.issued.append(body)
        answer: dict[str, Any] = {
            "upload_id": upload.id,
            "key": f"resources/{upload.id}/{body['filename']}",
            "status_url": f"{self.url}/api/v1/uploads/{upload.id}",
            "complete_url": f"{self.url}/api/v1/uploads/{upload.id}/complete",
            "expires_at": "2999-01-01T00:00:00Z",
            "multipart": multipart,
            "part_size": upload.part_size,
            "part_count": upload.part_count,
        }
        if multipart:
            assert upload.part_count is not None
            first = range(1, min(upload.part_count, self.first_page) + 1)
            answer.update(
                method="MULTIPART",
                upload_url=None,
                headers={},
                parts=[self._part_url(upload, n) for n in first],
                parts_url=f"{self.url}/api/v1/uploads/{upload.id}/parts",
            )
        else:
            self._generation += 1
            answer.update(
                method="PUT",
                upload_url=f"{self.url}/store/{upload.id}/single?gen={self._generation}",
                headers={"Content-Type": body["content_type"], "Content-Length": str(size)},
                parts=[],
                parts_url=None,
            )
        return answer

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[0] == "store":
            return self._store(method, parts[1], parts[2], int(query["gen"][0]), body)
        self.calls[f"{method} /{'/'.join('<id>' if p in self.uploads else p for p in parts)}"] += 1
        if headers.get("Authorization") != TOKEN:
            return 401, {"error": {"code": "unauthenticated", "message": "no token"}}
        data = json.loads(body) if body else None
        with self._lock:
            if path == "/api/v1/uploads" and method == "POST":
                return 201, self._issue(data, data["resource_id"])
            if path == "/api/v1/resources" and method == "POST":
                resource = {"id": str(uuid.uuid4()), "package_id": data["package_id"], "name": data["name"]}
                self.resources_created.append(resource)
                return 201, {"resource": resource, "upload": self._issue(data, resource["id"])}
            upload = self.uploads.get(parts[3]) if len(parts) > 3 else None
            if upload is None:
                return 404, {"error": {"code": "not_found", "message": "unknown upload"}}
            tail = parts[4] if len(parts) > 4 else ""
            if (method, tail) == ("GET", ""):
                return 200, self._status(upload)
            if (method, tail) == ("DELETE", ""):
                upload.state, upload.parts = "aborted", {}
                return 200, {"upload_id": upload.id, "state": "aborted"}
            if (method, tail) == ("POST", "parts"):
                return 200, {"parts": [self._part_url(upload, n) for n in data["part_numbers"]]}
            if (method, tail) == ("GET", "parts"):
                if upload.id in self.gone:
                    return 409, {"error": {"code": "upload_gone", "message": "the store no longer knows it"}}
                held = [
                    {"part_number": n, "size": len(chunk), "etag": etag}
                    for n, (chunk, etag) in sorted(upload.parts.items())
                ]
                return 200, {"part_size": upload.part_size, "part_count": upload.part_count, "parts": held}
            if (method, tail) == ("POST", "complete"):
                return self._complete(upload, data)
        return 405, {"error": {"code": "method_not_allowed", "message": "no"}}

    def _status(self, upload: FakeUpload) -> dict[str, Any]:
        if upload.state == "uploaded":
            # The link happens "in the background": the first poll after complete sees its outcome.
            upload.state = self.link_outcome
            if upload.state == "linked":
                upload.linked_url = f"{self.url}/files/{upload.id}"
            else:
                upload.last_error = "CKAN said no"
        return {
            "upload_id": upload.id,
            "state": upload.state,
            "resource_id": upload.resource_id,
            "linked_url": upload.linked_url,
            "last_error": upload.last_error,
            "multipart": upload.multipart,
            "part_size": upload.part_size,
            "part_count": upload.part_count,
            "size": upload.size,
        }

    def _complete(self, upload: FakeUpload, data: dict[str, Any] | None) -> tuple[int, Any]:
        self.completes.append(data)
        if upload.state in ("uploaded", "linked"):
            return 202, {"upload_id": upload.id, "state": upload.state}
        if not upload.multipart:
            if upload.object is None or self.not_uploaded_answers > 0:
                self.not_uploaded_answers = max(0, self.not_uploaded_answers - 1)
                return 409, {"error": {"code": "not_uploaded", "message": "no object yet"}}
        else:
            assert upload.part_count is not None
            missing = [n for n in range(1, upload.part_count + 1) if n not in upload.parts]
            if missing:
                return 409, {"error": {"code": "parts_missing", "message": "parts missing", "missing": missing}}
            sent = {p["part_number"]: p["etag"] for p in (data or {}).get("parts", [])}
            if sent and any(sent.get(n) != etag for n, (_, etag) in upload.parts.items()):
                return 409, {"error": {"code": "part_mismatch", "message": "etags differ"}}
            upload.object = b"".join(upload.parts[n][0] for n in sorted(upload.parts))
        upload.state = "uploaded"
        return 202, {"upload_id": upload.id, "state": "uploaded"}

    def _store(self, method: str, upload_id: str, which: str, generation: int, body: bytes) -> tuple[int, Any]:
        upload = self.uploads[upload_id]
        number = 1 if which == "single" else int(which)
        with self._lock:
            self.part_puts[number] += 1
            faults = self.put_faults.get(number)
            if generation in self.refused_generation:
                return 403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            if faults:
                return faults.pop(0), "<Error><Code>InternalError</Code></Error>"
            etag = f'"{hashlib.md5(body).hexdigest()}"'  # noqa: S324
            if which == "single":
                upload.object = body
            elif self.drop_part_after_put == number:
                self.drop_part_after_put = None
            else:
                upload.parts[number] = (body, etag)
        return 200, ("", {"ETag": etag})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:
                    return  # the client hung up mid-body: a store keeps nothing of it
                status, answer = service.handle(self.command, split.path, parse_qs(split.query), self.headers, body)
                extra: dict[str, str] = {}
                if isinstance(answer, tuple):
                    answer, extra = answer
                payload = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
