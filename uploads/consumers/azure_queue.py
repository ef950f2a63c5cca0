"""Pull Azure Event Grid blob events from an Azure Storage Queue: receive, record and commit, then delete.

Event Grid's Storage Queue destination writes one event per message, base64-encoded JSON (either
schema); an unreadable one is recorded raw, like every consumer's. A message that could not be
recorded (the database is down) is not deleted: it comes back when its visibility timeout ends, so
an outage loses nothing. Storage Queues have no long poll: an empty receive waits ``idle_seconds``
before the next.
"""

from __future__ import annotations

import logging
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import ExponentialRetry, QueueClient, QueueMessage
from django.conf import settings
from django.db import close_old_connections

from uploads.consumers.backoff import Backoff
from uploads.consumers.recording import Message, Tally, record_messages
from uploads.consumers.signals import StoppableLoop
from uploads.events.azure import parse_azure_queue_message
from uploads.models import EventSource

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 32  # the Storage Queue maximum per receive


class AzureQueueError(Exception):
    """The queue could not be read (the message names the error, never the account URL or a key)."""


def _reason(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


def make_queue_client() -> QueueClient:
    """The AZURE_EVENTS_QUEUE client, from the connection string or account + key (+ AZURE_QUEUE_ENDPOINT)."""
    options: dict[str, Any] = {
        "connection_timeout": 5,
        "read_timeout": 30,
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2, random_jitter_range=1),
    }
    if settings.AZURE_STORAGE_CONNECTION_STRING:
        return QueueClient.from_connection_string(
            settings.AZURE_STORAGE_CONNECTION_STRING, settings.AZURE_EVENTS_QUEUE, **options
        )
    endpoint = settings.AZURE_QUEUE_ENDPOINT or f"https://{settings.AZURE_STORAGE_ACCOUNT}.queue.core.windows.net"
    return QueueClient(
        endpoint,
        settings.AZURE_EVENTS_QUEUE,
        credential={"account_name": settings.AZURE_STORAGE_ACCOUNT, "account_key": settings.AZURE_STORAGE_KEY},
        **options,
    )


class AzureQueueConsumer(StoppableLoop):
    """A receive/record/delete loop over one Storage Queue; ``stop()`` ends it at the next safe point."""

    name = EventSource.AZURE_QUEUE.value
    receive_errors = (AzureQueueError,)

    def __init__(
        self,
        *,
        client: QueueClient,
        batch_size: int = MAX_BATCH_SIZE,
        visibility_timeout: int = 60,
        idle_seconds: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(backoff=backoff)
        self.client = client
        self.batch_size = max(1, min(batch_size, MAX_BATCH_SIZE))
        self.visibility_timeout = max(1, visibility_timeout)
        self.idle_seconds = idle_seconds

    def receive(self) -> list[QueueMessage]:
        try:
            return list(
                self.client.receive_messages(
                    messages_per_page=self.batch_size,
                    max_messages=self.batch_size,
                    visibility_timeout=self.visibility_timeout,
                )
            )
        except AzureError as exc:
            raise AzureQueueError(f"could not receive from the Azure queue: {_reason(exc)}") from None

    def record(self, messages: list[QueueMessage]) -> list[Tally]:
        """Record received messages as one batch; a tally per message (failed=1: not recorded).

        A message not recorded is not deleted: the queue shows it again after its visibility
        timeout, so a database outage loses nothing.
        """

        def message(raw: QueueMessage) -> Message:
            content = raw.content
            raw_body = content if isinstance(content, str | bytes) else repr(content)
            return Message(raw_body=raw_body, parse=lambda: parse_azure_queue_message(content), id=str(raw.id))

        return record_messages(source=EventSource.AZURE_QUEUE, messages=[message(m) for m in messages])

    def delete(self, message: QueueMessage) -> None:
        try:
            self.client.delete_message(message)
        except ResourceNotFoundError:
            return  # its visibility timeout ended and another reader has it: recorded already
        except AzureError as exc:
            # Recorded already: a redelivery is counted as a duplicate, nothing else.
            log.warning("could not delete a recorded Azure queue message: %s", _reason(exc))

    def poll_once(self) -> Tally:
        """One receive: record each message (committed), then delete the ones recorded."""
        close_old_connections()
        tally = Tally()
        messages = self.receive()
        self.busy = True
        try:
            for message, outcome in zip(messages, self.record(messages) if messages else [], strict=True):
                tally.add(outcome)
                if not outcome.failed:
                    self.delete(message)
        finally:
            self.busy = False
        return tally

    def poll(self, *, once: bool) -> Tally:
        return self.poll_once()
