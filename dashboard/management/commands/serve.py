"""Run the whole service in the foreground: web server, qcluster and event consumers.

When no object storage is configured, an embedded moto S3 (with SQS and bucket notifications)
is started on loopback first, and the children are pointed at it. A child that exits is started
again after a backoff; one Ctrl-C (or SIGTERM) stops everything within ``--stop-timeout``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from uploads import storage
from uploads.consumers.backoff import Backoff

EMBEDDED_BUCKET = "ckan-uploads"
EMBEDDED_QUEUE = "ckan-upload-events"
EMBEDDED_KEY = "embedded-moto"
# A child that ran this long before exiting was not crash-looping: its next restart is quick again.
STABLE_SECONDS = 60.0
POLL_SECONDS = 0.2


@dataclass
class Child:
    """One supervised process, in its own process group so that it can be stopped whole."""

    name: str
    command: list[str]
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.command, env=env, cwd=settings.BASE_DIR, process_group=0)
        self.started_at = time.monotonic()

    def exited(self) -> int | None:
        """The exit code once the process has ended (and its group been cleared), else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        self.kill_group()  # whatever it forked and left behind
        return self.proc.returncode

    def kill_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def gunicorn_command(bind: str, *, workers: int) -> list[str]:
    """The web server as `serve` runs it: the project's gunicorn config, the access log on stdout."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "dashboard.wsgi:application",
        "--config",
        "python:dashboard.gunicorn_conf",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--no-control-socket",
        "--access-logfile",
        "-",
    ]


class Command(BaseCommand):
    help = "Run the web server, the qcluster workers and the event consumers together, restarting any that exits."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=os.environ.get("BIND", "127.0.0.1:8000"))
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--storage-port", type=int, default=int(os.environ.get("EMBEDDED_STORAGE_PORT", "9000")))
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=10.0,
            help="seconds the children get to stop after SIGTERM before their process groups are killed",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        env = dict(os.environ)
        moto = None
        if not storage.is_configured():
            moto, extra = self._start_embedded_storage(options["storage_port"])
            env.update(extra)
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        children = self._children(env, options)
        try:
            for child in children:
                self.stdout.write(f"starting {child.name}: {' '.join(child.command[1:])}")
                child.start(env)
            self.stdout.write(
                self.style.SUCCESS(
                    f"Serving on http://{options['bind']}/ (admin at /admin/, "
                    f"API docs at /api/v1/docs). Ctrl-C stops everything."
                )
            )
            while not stopping:
                self._supervise(children, env)
                time.sleep(POLL_SECONDS)
        finally:
            self._stop(children, options["stop_timeout"])
            if moto is not None:
                moto.stop()
        sys.exit(0)

    def _supervise(self, children: list[Child], env: dict[str, str]) -> None:
        """Restart, after its backoff, each child that has exited; the others keep running."""
        now = time.monotonic()
        for child in children:
            if child.proc is None:
                if now >= child.restart_at:
                    self.stderr.write(f"restarting {child.name}")
                    child.start(env)
                continue
            code = child.exited()
            if code is None:
                continue
            if now - child.started_at >= STABLE_SECONDS:
                child.backoff.reset()
            delay = child.backoff.failed()
            self.stderr.write(f"{child.name} exited with {code}; restarting it in {delay:.1f} s")
            child.proc, child.restart_at = None, now + delay

    def _stop(self, children: list[Child], timeout: float) -> None:
        """SIGTERM each child's main process, then SIGKILL each whole group after ``timeout``."""
        running = [(c.name, c.proc) for c in children if c.proc is not None and c.proc.poll() is None]
        # The main process only: gunicorn's master and qcluster's main stop their own workers.
        for _, proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop within {timeout:g} s: killing its process group")
        for child in children:
            child.kill_group()
            if child.proc is not None:
                child.proc.wait()

    def _children(self, env: dict[str, str], options: dict[str, Any]) -> list[Child]:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children = [
            Child("web", gunicorn_command(options["bind"], workers=options["web_workers"])),
            Child("worker", [*manage, "run_qcluster"]),
        ]
        if env.get("SQS_QUEUE_URL"):
            children.append(Child("sqs-consumer", [*manage, "consume_sqs"]))
        if env.get("CF_QUEUE_ID"):
            children.append(Child("r2-consumer", [*manage, "consume_r2_queue"]))
        if env.get("AZURE_EVENTS_QUEUE"):
            children.append(Child("azure-consumer", [*manage, "consume_azure_queue"]))
        return children

    def _start_embedded_storage(self, port: int) -> tuple[Any, dict[str, str]]:
        import boto3
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        host, real_port = server.get_host_and_port()
        endpoint = f"http://{host}:{real_port}"
        credentials = {"aws_access_key_id": EMBEDDED_KEY, "aws_secret_access_key": EMBEDDED_KEY}
        # moto's SQS has no "auto" region: create both in us-east-1; signing in "auto" still works.
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        s3.create_bucket(Bucket=EMBEDDED_BUCKET)
        queue_url = sqs.create_queue(QueueName=EMBEDDED_QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=EMBEDDED_BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "Id": "uploads-events",
                        "QueueArn": arn,
                        "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    }
                ]
            },
        )
        self.stdout.write(
            self.style.WARNING(
                f"No object storage configured: started an embedded moto S3 at {endpoint} (bucket {EMBEDDED_BUCKET}, "
                f"events into SQS {EMBEDDED_QUEUE}). Its contents live in memory and vanish when this stops."
            )
        )
        return server, {
            "STORAGE_ENDPOINT_URL": endpoint,
            "STORAGE_BUCKET": EMBEDDED_BUCKET,
            "STORAGE_ACCESS_KEY_ID": EMBEDDED_KEY,
            "STORAGE_SECRET_ACCESS_KEY": EMBEDDED_KEY,
            "STORAGE_PUBLIC_BASE_URL": f"{endpoint}/{EMBEDDED_BUCKET}",
            "SQS_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL_SQS": endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": EMBEDDED_KEY,
            "AWS_SECRET_ACCESS_KEY": EMBEDDED_KEY,
        }
