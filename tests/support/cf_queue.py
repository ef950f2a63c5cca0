"""A local stand-in of the Cloudflare Queues HTTP pull/ack API, on 127.0.0.1 in a thread.

It keeps leases, honours visibility timeouts and retry delays, and redelivers unacked messages
with a growing ``attempts`` count, like the real service. Use::

    with FakeCloudflareQueue() as queue:
        queue.send({"action": "PutObject", ...})
        env = queue.environ()          # CF_* variables for settings or a child process
        ... consume ...
        assert queue.backlog == 0 and len(queue.acked) == 1
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCOUNT_ID = "test-account"
QUEUE_ID = "test-queue"
TOKEN = "test-cf-api-token"


@dataclass
class QueuedMessage:
    id: str
    body: Any
    encoding: str
    timestamp_ms: int
    attempts: int = 0
    visible_at: float = 0.0
    lease_id: str = ""


@dataclass
class FakeCloudflareQueue:
    account_id: str = ACCOUNT_ID
    queue_id: str = QUEUE_ID
    token: str = TOKEN
    messages: dict[str, QueuedMessage] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)  # ids of acknowledged messages, in order
    retried: list[str] = field(default_factory=list)  # ids handed back for a retry
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (action, body)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # --- the test's side ---

    @property
    def base_url(self) -> str:
        """What CF_API_BASE_URL should be (like https://api.cloudflare.com/client/v4)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/client/v4"

    def environ(self) -> dict[str, str]:
        return {
            "CF_API_BASE_URL": self.base_url,
            "CF_ACCOUNT_ID": self.account_id,
            "CF_QUEUE_ID": self.queue_id,
            "CF_API_TOKEN": self.token,
        }

    def settings(self) -> dict[str, str]:
        return self.environ()

    def send(self, body: Any, *, encoding: str = "json") -> str:
        """Queue a message. ``encoding``: "json" (body as a JSON string), "base64" (base64 of JSON), or "raw" text."""
        message_id = uuid.uuid4().hex
        with self._lock:
            self.messages[message_id] = QueuedMessage(
                id=message_id, body=body, encoding=encoding, timestamp_ms=int(time.time() * 1000)
            )
        return message_id

    @property
    def backlog(self) -> int:
        """Messages not acknowledged yet (leased or not)."""
        with self._lock:
            return len(self.messages)

    def attempts(self, message_id: str) -> int:
        with self._lock:
            message = self.messages.get(message_id)
            return message.attempts if message else -1

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeCloudflareQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API's side ---

    def _wire_body(self, message: QueuedMessage) -> str:
        if message.encoding == "raw":
            return str(message.body)
        text = json.dumps(message.body)
        if message.encoding == "base64":
            return base64.b64encode(text.encode()).decode()
        return text

    def _pull(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_size = int(body.get("batch_size", 5))
        visibility = int(body.get("visibility_timeout_ms", 30_000)) / 1000
        now = time.time()
        out = []
        with self._lock:
            for message in self.messages.values():
                if len(out) >= batch_size:
                    break
                if message.visible_at > now:
                    continue
                message.attempts += 1
                message.lease_id = uuid.uuid4().hex
                message.visible_at = now + visibility
                out.append(
                    {
                        "id": message.id,
                        "body": self._wire_body(message),
                        "timestamp_ms": message.timestamp_ms,
                        "attempts": message.attempts,
                        "metadata": {"CF-Content-Type": "text" if message.encoding == "raw" else "json"},
                        "lease_id": message.lease_id,
                    }
                )
            backlog = len(self.messages)
        return {"message_backlog_count": backlog, "messages": out}

    def _ack(self, body: dict[str, Any]) -> dict[str, Any]:
        warnings = []
        ack_count = retry_count = 0
        now = time.time()
        with self._lock:
            by_lease = {m.lease_id: m for m in self.messages.values() if m.lease_id and m.visible_at > now}
            for item in body.get("acks", []):
                message = by_lease.pop(item.get("lease_id"), None)
                if message is None:
                    warnings.append(f"lease {item.get('lease_id')} is unknown or expired")
                    continue
                del self.messages[message.id]
                self.acked.append(message.id)
                ack_count += 1
            for item in body.get("retries", []):
                message = by_lease.pop(item.get("lease_id"), None)
                if message is None:
                    warnings.append(f"lease {item.get('lease_id')} is unknown or expired")
                    continue
                message.lease_id = ""
                message.visible_at = now + float(item.get("delay_seconds", 0))
                self.retried.append(message.id)
                retry_count += 1
        return {"ackCount": ack_count, "retryCount": retry_count, "warnings": warnings}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        queue = self
        prefix = f"/client/v4/accounts/{self.account_id}/queues/{self.queue_id}/messages/"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.headers.get("Authorization") != f"Bearer {queue.token}":
                    self._answer(
                        401, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}
                    )
                    return
                action = self.path.removeprefix(prefix) if self.path.startswith(prefix) else ""
                if action not in ("pull", "ack"):
                    self._answer(404, {"success": False, "errors": [{"code": 7003, "message": "No route"}]})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._answer(400, {"success": False, "errors": [{"code": 10001, "message": "bad JSON"}]})
                    return
                with queue._lock:
                    queue.requests.append((action, body))
                result = queue._pull(body) if action == "pull" else queue._ack(body)
                self._answer(200, {"success": True, "errors": [], "messages": [], "result": result})

        return Handler
