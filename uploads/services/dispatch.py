"""Hand work to the background workers, only once the data it needs is committed."""

from __future__ import annotations

from uuid import UUID

from django.db import transaction
from django_q.tasks import async_task


def enqueue_link(upload_id: UUID, *, trigger: str, triggered_by: str = "") -> None:
    """Ask a worker to link an upload after the current transaction commits.

    The task is only a trigger: the ledger row says what is due, and the sweep re-enqueues
    anything whose task was lost, so a broker hiccup here delays a link but never loses it.
    """

    def send() -> None:
        async_task(
            "uploads.tasks.link_upload_task",
            str(upload_id),
            trigger,
            triggered_by,
            task_name=f"link {upload_id}",
            group="link",
        )

    transaction.on_commit(send)
