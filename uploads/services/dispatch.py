"""Hand work to the background workers, only once the data it needs is committed."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

LINK_TASK = "uploads.tasks.link_upload_task"


class _Collect:
    """A stand-in broker for ``async_task``: it keeps the signed packages instead of sending them.

    django-q2 builds, signs and (with Q_SYNC) runs each task exactly as usual; only the push is
    deferred, so that N tasks reach the real broker in one go (:func:`push_packages`).
    """

    def __init__(self, list_key: str) -> None:
        self.list_key = list_key
        self.packages: list[str] = []

    def enqueue(self, package: str) -> None:
        self.packages.append(package)


def push_packages(packages: Sequence[str], broker: Broker | None = None) -> None:
    """Send signed task packages to the broker at once: one INSERT (ORM), one RPUSH (Redis)."""
    if not packages:
        return
    broker = broker or get_broker()
    if isinstance(broker, ORM):
        now = timezone.now()
        key = broker.list_key or Conf.CLUSTER_NAME
        OrmQ.objects.using(Conf.ORM).bulk_create([OrmQ(key=key, payload=p, lock=now) for p in packages])
    elif isinstance(broker, Redis):
        broker.connection.rpush(broker.list_key, *packages)
    else:  # another django-q2 broker: its own enqueue, one by one
        for package in packages:
            broker.enqueue(package)


def send_link_tasks(links: Sequence[tuple[UUID, str, str]]) -> None:
    """Enqueue one link task per (upload id, trigger, triggered by), in one push to the broker."""
    collect = _Collect(list_key=Conf.CLUSTER_NAME)
    for upload_id, trigger, triggered_by in links:
        async_task(
            LINK_TASK,
            str(upload_id),
            trigger,
            triggered_by,
            task_name=f"link {upload_id}",
            group="link",
            broker=collect,
        )
    push_packages(collect.packages)


def enqueue_links(links: Sequence[tuple[UUID, str, str]]) -> None:
    """Ask workers to link these uploads once the current transaction commits (one push for all).

    A task is only a trigger: the ledger row says what is due, and the sweep re-enqueues
    anything whose task was lost, so a broker hiccup here delays a link but never loses it.
    """
    if not links:
        return
    pending = list(links)
    if _broker_in_this_database():
        # The ORM broker's table is in the ledger's database: the tasks' one INSERT joins the
        # transaction, so they become visible exactly when the data commits (and vanish with a
        # rollback), without a second commit.
        send_link_tasks(pending)
    else:
        transaction.on_commit(lambda: send_link_tasks(pending))


def _broker_in_this_database() -> bool:
    other = Conf.SYNC or Conf.BROKER_CLASS or Conf.IRON_MQ or Conf.SQS  # get_broker's order: these win
    return Conf.ORM == DEFAULT_DB_ALIAS and not other


def enqueue_link(upload_id: UUID, *, trigger: str, triggered_by: str = "") -> None:
    """Ask a worker to link an upload after the current transaction commits."""
    enqueue_links([(upload_id, trigger, triggered_by)])
