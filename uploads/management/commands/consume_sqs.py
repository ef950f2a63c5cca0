"""`manage.py consume_sqs`: record S3 event notifications from SQS (``--once`` drains and exits)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from uploads.consumers.signals import stop_on_signals
from uploads.consumers.sqs import LONG_POLL_SECONDS, ConsumerError, SqsConsumer, make_sqs_client


class Command(BaseCommand):
    help = "Receive S3 event notifications from SQS_QUEUE_URL: record and commit each, then delete it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="drain the queue, then exit")
        parser.add_argument("--wait-seconds", type=int, default=LONG_POLL_SECONDS, choices=range(0, 21))
        parser.add_argument("--batch-size", type=int, default=10, choices=range(1, 11))

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SQS_QUEUE_URL:
            raise CommandError("SQS_QUEUE_URL is not set")
        consumer = SqsConsumer(
            client=make_sqs_client(wait_seconds=options["wait_seconds"]),
            queue_url=settings.SQS_QUEUE_URL,
            wait_seconds=options["wait_seconds"],
            batch_size=options["batch_size"],
        )
        try:
            with stop_on_signals(consumer):
                tally = consumer.run(once=options["once"])
        except ConsumerError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"consume_sqs: {tally}")
        if tally.failed:
            raise CommandError(f"{tally.failed} messages could not be recorded; they stay in the queue")
