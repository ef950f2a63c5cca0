"""Hand work to the background workers, only once the data it needs is committed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signals import pre_enqueue
from django_q.signing import SignedPackage
from django_q.tasks import async_task

LINK_TASK = "uploads.tasks.link_upload_task"


def link_package(upload_id: UUID, trigger: str, triggered_by: str, *, started: datetime) -> str:
    """The signed package ``async_task`` builds for one link task (tests compare the two).

    Built here rather than by ``async_task``, whose humanhash name, option handling and log
    line per task cost about as much again as the signing (docs/benchmarks.md, "Event ingest").
    """
    text = str(upload_id)
    task: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "name": f"link {text}",
        "func": LINK_TASK,
        "args": (text, trigger, triggered_by),
        "group": "link",
    }
    if Conf.CACHED:
        task["cached"] = Conf.CACHED
    if Conf.ACK_FAILURES:
        task["ack_failure"] = Conf.ACK_FAILURES
    task["kwargs"] = {}
    task["started"] = started
    pre_enqueue.send(sender="django_q", task=task)
    return SignedPackage.dumps(task)


def push_packages(packages: Sequence[str], broker: Broker | None = None) -> None:
    """Send signed task packages to the broker at once: one INSERT (ORM), one RPUSH (Redis)."""
    if not packages:
        return
    broker = broker or get_broker()
    if isinstance(broker, ORM):
        _insert_ormq(broker.list_key or Conf.CLUSTER_NAME, packages)
    elif isinstance(broker, Redis):
        broker.connection.rpush(broker.list_key, *packages)
    else:  # another django-q2 broker: its own enqueue, one by one
        for package in packages:
            broker.enqueue(package)


def _insert_ormq(key: str, packages: Sequence[str]) -> None:
    now = timezone.now()
    db = connections[Conf.ORM]
    if db.vendor != "postgresql":
        OrmQ.objects.using(Conf.ORM).bulk_create([OrmQ(key=key, payload=p, lock=now) for p in packages])
        return
    # PostgreSQL: the packages as one JSON array parameter, in a short constant statement
    # (psycopg binds client-side and would parse a placeholder per package anew each time), and
    # no RETURNING of ids nobody reads.
    quote = db.ops.quote_name
    table = quote(OrmQ._meta.db_table)
    lock = OrmQ._meta.get_field("lock").get_db_prep_save(now, db)
    sql = (
        f"INSERT INTO {table} ({quote('key')}, {quote('payload')}, {quote('lock')}) "  # noqa: S608
        "SELECT %s, p, %s FROM jsonb_array_elements_text(%s::jsonb) AS p"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, [key, lock, json.dumps(list(packages))])


def send_link_tasks(links: Sequence[tuple[UUID, str, str]]) -> None:
    """Enqueue one link task per (upload id, trigger, triggered by), in one push to the broker."""
    if Conf.SYNC:  # Q_SYNC: django-q2 runs each task right here, inside async_task
        for upload_id, trigger, triggered_by in links:
            async_task(LINK_TASK, str(upload_id), trigger, triggered_by, task_name=f"link {upload_id}", group="link")
        return
    started = timezone.now()
    push_packages([link_package(*link, started=started) for link in links])


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
