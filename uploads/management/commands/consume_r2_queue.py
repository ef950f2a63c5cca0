"""`manage.py consume_r2_queue`: record R2 event notifications from a Cloudflare Queue (pull consumer)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from uploads.consumers.r2_queue import CloudflareQueueClient, CloudflareQueueError, QueueConfig, R2QueueConsumer
from uploads.consumers.signals import stop_on_signals


class Command(BaseCommand):
    help = "Pull R2 event notifications from CF_QUEUE_ID: record and commit each, then ack it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="drain the queue, then exit")
        parser.add_argument("--batch-size", type=int, default=10, choices=range(1, 101))
        parser.add_argument("--visibility-timeout", type=int, default=60, help="seconds a pulled message stays leased")
        parser.add_argument("--retry-delay", type=int, default=30, help="seconds before a failed message returns")
        parser.add_argument("--idle-seconds", type=float, default=5.0, help="wait after an empty pull")

    def handle(self, *args: Any, **options: Any) -> None:
        required = {
            "CF_ACCOUNT_ID": settings.CF_ACCOUNT_ID,
            "CF_QUEUE_ID": settings.CF_QUEUE_ID,
            "CF_API_TOKEN": settings.CF_API_TOKEN,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise CommandError(f"set {', '.join(missing)} to pull from a Cloudflare Queue")
        client = CloudflareQueueClient(
            QueueConfig(
                api_base_url=settings.CF_API_BASE_URL,
                account_id=settings.CF_ACCOUNT_ID,
                queue_id=settings.CF_QUEUE_ID,
                api_token=settings.CF_API_TOKEN,
            )
        )
        consumer = R2QueueConsumer(
            client=client,
            batch_size=options["batch_size"],
            visibility_timeout_ms=max(1, options["visibility_timeout"]) * 1000,
            retry_delay_seconds=max(0, options["retry_delay"]),
            idle_seconds=max(0.1, options["idle_seconds"]),
        )
        try:
            with stop_on_signals(consumer):
                tally = consumer.run(once=options["once"])
        except CloudflareQueueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"consume_r2_queue: {tally}")
        if tally.failed:
            raise CommandError(f"{tally.failed} messages could not be recorded; they were handed back for a retry")
