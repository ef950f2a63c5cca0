"""`manage.py run_qcluster`: django-q2's `qcluster`, made safe to stop with a SIGTERM to its whole group.

systemd (and `kill -TERM -<pgid>`) signals every process of the cluster at once. Stock django-q2
lets its sentinel die of that SIGTERM while it waits on the shared stop event, so the main
process's ``stop_event.set()`` then waits forever for a sleeper that will never wake (a
multiprocessing Condition), and the cluster hangs until it is killed. Here the sentinel ignores
SIGTERM (the main process stops it through the stop event, as on Ctrl-C), and the processes it
forks turn SIGTERM into SystemExit, so a worker blocked in ``Queue.get`` releases the queue's lock
on its way out instead of dying with it held and blocking the workers spawned after it.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

from django.conf import settings
from django_q import cluster
from django_q.management.commands.qcluster import Command as QclusterCommand


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class GroupSafeSentinel(cluster.Sentinel):
    """A sentinel that outlives a SIGTERM to its group, and whose children exit cleanly on one."""

    def start(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, _exit_on_sigterm))
        super().start()


class GroupSafeCluster(cluster.Cluster):
    """A cluster that stops once however many SIGTERMs arrive (systemd's, then `serve`'s)."""

    _stop_requested = False

    def sig_handler(self, signum: int, frame: FrameType | None) -> None:
        # A second stop() from inside the first could re-enter the stop event's lock and deadlock.
        if self._stop_requested:
            return
        self._stop_requested = True
        super().sig_handler(signum, frame)


class Command(QclusterCommand):
    help = "Start the django-q2 cluster; a SIGTERM to its whole process group stops it in seconds."

    def handle(self, *args: Any, **options: Any) -> None:
        # Cluster.start() looks the sentinel class up in its module: this process only runs a cluster.
        cluster.Sentinel = GroupSafeSentinel  # type: ignore[misc]
        settings.SECRET_KEY  # noqa: B018 - as qcluster does: refuse to start without it (tasks are signed)
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        q = GroupSafeCluster()
        q.start()
        if options.get("run_once"):
            q.stop()
