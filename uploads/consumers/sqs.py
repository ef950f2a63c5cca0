"""Pull S3 events from SQS: receive, record and commit, then delete.

Each message is read by its own shape (``uploads.events.sqs``): an S3 notification sent directly
or by SNS with raw delivery, an SNS envelope, or an EventBridge event, so one queue may be fed by
any of S3's routes, or by two of them while an operator moves from one to the other.

boto3 is imported here rather than in ``uploads.storage``: storage wraps the bucket (S3 API, R2
safe settings, STORAGE_* credentials), while this client talks to a different service with
boto3's own standard AWS_* configuration; mixing them would hand the bucket's credentials to SQS.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.db import close_old_connections

from uploads.consumers.backoff import Backoff
from uploads.consumers.recording import Message, Tally, record_messages
from uploads.consumers.signals import StoppableLoop
from uploads.events import parse_sqs_body
from uploads.models import EventSource

log = logging.getLogger(__name__)

LONG_POLL_SECONDS = 20  # the SQS maximum
DRAIN_POLL_SECONDS = 1


class ConsumerError(Exception):
    """The queue could not be read (the message names the error, never the queue URL or a key)."""


def _reason(exc: BotoCoreError | ClientError) -> str:
    # str(exc) of a connection error quotes the endpoint URL: keep the class (and AWS's code).
    if isinstance(exc, ClientError):
        return f"ClientError {exc.response.get('Error', {}).get('Code', '?')}"
    return type(exc).__name__


def make_sqs_client(*, wait_seconds: int = LONG_POLL_SECONDS) -> Any:
    """An SQS client from boto3's standard environment (AWS_REGION, AWS_ENDPOINT_URL_SQS, keys...)."""
    config = Config(
        connect_timeout=5,
        read_timeout=wait_seconds + 10,  # a long poll holds the connection open for wait_seconds
        retries={"max_attempts": 3, "mode": "standard"},
    )
    # botocore itself reads only AWS_DEFAULT_REGION; AWS_REGION is the name the AWS SDKs and this
    # project document, so honour it first.
    region = os.environ.get("AWS_REGION") or None
    return boto3.session.Session().client("sqs", region_name=region, config=config)


class SqsConsumer(StoppableLoop):
    """A receive/record/delete loop over one queue; ``stop()`` ends it at the next safe point."""

    name = EventSource.SQS.value
    receive_errors = (ConsumerError,)

    def __init__(
        self,
        *,
        client: Any,
        queue_url: str,
        wait_seconds: int = LONG_POLL_SECONDS,
        batch_size: int = 10,
        backoff: Backoff | None = None,
    ):
        super().__init__(backoff=backoff)
        self.client = client
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self.batch_size = batch_size

    def receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        try:
            answer = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.batch_size,
                WaitTimeSeconds=wait_seconds,
                AttributeNames=["ApproximateReceiveCount"],
            )
        except (BotoCoreError, ClientError) as exc:
            raise ConsumerError(f"could not receive from SQS: {_reason(exc)}") from None
        return list(answer.get("Messages", []))

    def record(self, messages: list[dict[str, Any]]) -> list[Tally]:
        """Record received messages as one batch; a tally per message (failed=1: not recorded).

        A message not recorded is not deleted: SQS shows it again after the visibility timeout
        (and dead-letters it after the queue's maxReceiveCount), so a database outage loses nothing.
        """

        def message(raw: dict[str, Any]) -> Message:
            body = raw.get("Body", "")
            return Message(raw_body=body, parse=lambda: parse_sqs_body(body), id=str(raw.get("MessageId", "")))

        return record_messages(source=EventSource.SQS, messages=[message(m) for m in messages])

    def delete(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            answer = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            # Recorded already: a redelivery is counted as a duplicate, nothing else.
            log.warning("could not delete %d recorded SQS messages: %s", len(entries), _reason(exc))
            return
        for failure in answer.get("Failed", []):
            log.warning("SQS did not delete a recorded message: %s", failure.get("Message") or failure.get("Code"))

    def poll_once(self, wait_seconds: int) -> Tally:
        """One receive: record each message, then delete the ones recorded."""
        close_old_connections()
        tally = Tally()
        done: list[dict[str, Any]] = []
        messages = self.receive(wait_seconds)
        self.busy = True
        try:
            for message, outcome in zip(messages, self.record(messages) if messages else [], strict=True):
                tally.add(outcome)
                if not outcome.failed:
                    done.append(message)
            self.delete(done)
        finally:
            self.busy = False
        return tally

    def poll(self, *, once: bool) -> Tally:
        return self.poll_once(DRAIN_POLL_SECONDS if once else self.wait_seconds)
