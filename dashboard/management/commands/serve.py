"""Run the whole service in the foreground: web server, qcluster and event consumers.

When no object storage is configured, an embedded moto S3 (with SQS and bucket notifications)
is started on loopback first, and the children are pointed at it. One Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from uploads import storage

EMBEDDED_BUCKET = "ckan-uploads"
EMBEDDED_QUEUE = "ckan-upload-events"
EMBEDDED_KEY = "embedded-moto"


class Command(BaseCommand):
    help = "Run the web server, the qcluster workers and the event consumers together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=os.environ.get("BIND", "127.0.0.1:8000"))
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--storage-port", type=int, default=int(os.environ.get("EMBEDDED_STORAGE_PORT", "9000")))

    def handle(self, *args: Any, **options: Any) -> None:
        env = dict(os.environ)
        moto = None
        if not storage.is_configured():
            moto, extra = self._start_embedded_storage(options["storage_port"])
            env.update(extra)
        children = self._start_children(env, options)
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(
            self.style.SUCCESS(
                f"Serving on http://{options['bind']}/ (admin at /admin/, "
                f"API docs at /api/v1/docs). Ctrl-C stops everything."
            )
        )
        exit_code = 0
        try:
            while not stopping:
                for name, proc in children.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping the rest.")
                        stopping, exit_code = True, 1
                        break
                time.sleep(0.5)
        finally:
            for proc in children.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for proc in children.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
            if moto is not None:
                moto.stop()
        sys.exit(exit_code)

    def _start_children(self, env: dict[str, str], options: dict[str, Any]) -> dict[str, subprocess.Popen[bytes]]:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands: dict[str, list[str]] = {
            "web": [
                sys.executable,
                "-m",
                "gunicorn",
                "dashboard.wsgi:application",
                "--config",
                "python:dashboard.gunicorn_conf",
                "--bind",
                options["bind"],
                "--workers",
                str(options["web_workers"]),
                "--no-control-socket",
                "--access-logfile",
                "-",
            ],
            "worker": [*manage, "qcluster"],
        }
        if env.get("SQS_QUEUE_URL"):
            commands["sqs-consumer"] = [*manage, "consume_sqs"]
        if env.get("CF_QUEUE_ID"):
            commands["r2-consumer"] = [*manage, "consume_r2_queue"]
        children = {}
        for name, command in commands.items():
            self.stdout.write(f"starting {name}: {' '.join(command[1:])}")
            children[name] = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR)
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
