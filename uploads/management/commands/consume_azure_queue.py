"""`manage.py consume_azure_queue`: record Event Grid blob events from an Azure Storage Queue."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from uploads.consumers.azure_queue import MAX_BATCH_SIZE, AzureQueueConsumer, AzureQueueError, make_queue_client
from uploads.consumers.signals import stop_on_signals


class Command(BaseCommand):
    help = "Receive Event Grid blob events from AZURE_EVENTS_QUEUE: record and commit each, then delete it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="drain the queue, then exit")
        parser.add_argument("--batch-size", type=int, default=MAX_BATCH_SIZE, choices=range(1, MAX_BATCH_SIZE + 1))
        parser.add_argument("--visibility-timeout", type=int, default=60, help="seconds a received message is hidden")
        parser.add_argument("--idle-seconds", type=float, default=5.0, help="wait after an empty receive")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.AZURE_EVENTS_QUEUE:
            raise CommandError("AZURE_EVENTS_QUEUE is not set")
        if not (
            settings.AZURE_STORAGE_CONNECTION_STRING or (settings.AZURE_STORAGE_ACCOUNT and settings.AZURE_STORAGE_KEY)
        ):
            raise CommandError("set AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or AZURE_STORAGE_CONNECTION_STRING")
        consumer = AzureQueueConsumer(
            client=make_queue_client(),
            batch_size=options["batch_size"],
            visibility_timeout=options["visibility_timeout"],
            idle_seconds=max(0.1, options["idle_seconds"]),
        )
        try:
            with stop_on_signals(consumer):
                tally = consumer.run(once=options["once"])
        except AzureQueueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"consume_azure_queue: {tally}")
        if tally.failed:
            raise CommandError(f"{tally.failed} messages could not be recorded; they stay in the queue")
