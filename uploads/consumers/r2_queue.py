"""Pull R2 event notifications from a Cloudflare Queue over HTTP: pull, record and commit, then ack.

Messages that could not be recorded (a database error) are handed back as retries with a delay;
unreadable ones are kept raw in the ledger and acknowledged, so they are shown, not redelivered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from django.db import close_old_connections

from uploads.consumers.backoff import Backoff
from uploads.consumers.recording import Message, Tally, record_messages
from uploads.consumers.signals import StoppableLoop
from uploads.events import parse_r2_pulled_message
from uploads.models import EventSource

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 100  # the API's limit
MAX_VISIBILITY_TIMEOUT_MS = 43_200_000


class CloudflareQueueError(Exception):
    """The Queues API refused a request or could not be reached (the token is never included)."""


@dataclass(frozen=True)
class QueueConfig:
    api_base_url: str
    account_id: str
    queue_id: str
    api_token: str
    timeout: tuple[float, float] = (5.0, 30.0)


class CloudflareQueueClient:
    """The two calls of a pull consumer, over one requests Session."""

    def __init__(self, config: QueueConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {config.api_token}"
        base = config.api_base_url.rstrip("/")
        self.url = f"{base}/accounts/{config.account_id}/queues/{config.queue_id}/messages"

    def _post(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.session.post(f"{self.url}/{action}", json=body, timeout=self.config.timeout)
        except requests.RequestException as exc:
            raise CloudflareQueueError(f"could not reach the Queues API ({action}): {type(exc).__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code >= 400 or not answer.get("success", False):
            errors = "; ".join(str(e.get("message", e)) for e in answer.get("errors", []) if isinstance(e, dict))
            raise CloudflareQueueError(f"the Queues API answered {response.status_code} to {action}: {errors or '-'}")
        result = answer.get("result") or {}
        return result if isinstance(result, dict) else {}

    def pull(self, *, batch_size: int, visibility_timeout_ms: int) -> list[dict[str, Any]]:
        """Lease up to ``batch_size`` messages for ``visibility_timeout_ms``."""
        result = self._post("pull", {"batch_size": batch_size, "visibility_timeout_ms": visibility_timeout_ms})
        messages = result.get("messages") or []
        return [m for m in messages if isinstance(m, dict)]

    def ack(self, *, acks: list[str], retries: list[str], delay_seconds: int) -> dict[str, Any]:
        """Acknowledge leases (done) and hand others back for a retry after ``delay_seconds``."""
        return self._post(
            "ack",
            {
                "acks": [{"lease_id": lease} for lease in acks],
                "retries": [{"lease_id": lease, "delay_seconds": delay_seconds} for lease in retries],
            },
        )


class R2QueueConsumer(StoppableLoop):
    """A pull/record/ack loop; ``stop()`` ends it at the next safe point."""

    name = EventSource.R2_QUEUE.value
    receive_errors = (CloudflareQueueError,)

    def __init__(
        self,
        *,
        client: CloudflareQueueClient,
        batch_size: int = 10,
        visibility_timeout_ms: int = 60_000,
        retry_delay_seconds: int = 30,
        idle_seconds: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(backoff=backoff)
        self.client = client
        self.batch_size = max(1, min(batch_size, MAX_BATCH_SIZE))
        self.visibility_timeout_ms = max(1, min(visibility_timeout_ms, MAX_VISIBILITY_TIMEOUT_MS))
        self.retry_delay_seconds = retry_delay_seconds
        self.idle_seconds = idle_seconds

    def record(self, messages: list[dict[str, Any]]) -> list[Tally]:
        """Record pulled messages as one batch; a tally per message (failed=1: not recorded, retried)."""

        def message(raw: dict[str, Any]) -> Message:
            body = raw.get("body")
            return Message(
                raw_body=body if isinstance(body, str) else repr(body),
                parse=lambda: parse_r2_pulled_message(raw),
                id=str(raw.get("id", "")),
            )

        return record_messages(source=EventSource.R2_QUEUE, messages=[message(m) for m in messages])

    def poll_once(self) -> Tally:
        """One pull: record each message, then ack the recorded ones and retry the others."""
        close_old_connections()
        tally = Tally()
        acks: list[str] = []
        retries: list[str] = []
        messages = self.client.pull(batch_size=self.batch_size, visibility_timeout_ms=self.visibility_timeout_ms)
        self.busy = True
        try:
            for message, outcome in zip(messages, self.record(messages) if messages else [], strict=True):
                tally.add(outcome)
                lease = message.get("lease_id")
                if isinstance(lease, str) and lease:
                    (retries if outcome.failed else acks).append(lease)
            if acks or retries:
                try:
                    self.client.ack(acks=acks, retries=retries, delay_seconds=self.retry_delay_seconds)
                except CloudflareQueueError as exc:
                    # Recorded already: the redelivery after the visibility timeout is a duplicate.
                    log.warning("could not ack %d messages: %s", len(acks) + len(retries), exc)
        finally:
            self.busy = False
        return tally

    def poll(self, *, once: bool) -> Tally:
        return self.poll_once()
