"""The whole service as separate processes on real parts, for the fault drill and the PUT->linked bench.

A moto S3+SQS server process, the web app under gunicorn (``serve.gunicorn_command``), the
``run_qcluster`` workers and the ``consume_sqs`` consumer, on a database of their own (SQLite
file or a PostgreSQL database created for the run) with the ORM or the Redis broker. The real
local CKAN is reached through a :class:`TcpProxy` and so is moto's SQS endpoint (for the
consumer only), so that a caller can make either look down or hung.

Nothing here imports Django settings: the caller sets up Django itself (``django_environ`` gives
the environment) when it wants to read the ledger.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import requests

from tests.support.processes import free_port, wait_http
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY, SECRET_KEY = "live-access-key", "live-secret-key"
BUCKET = "ckan-uploads"
EVENTS_QUEUE = "ckan-upload-events"
INBOX_QUEUE = "drill-inbox"  # where the bucket's notifications land when a forwarder sits in between
PREFIX = "resources/api_uploads/"


def prepare_database(url: str) -> None:
    """Start from an empty database: delete a SQLite file, or drop and create a PostgreSQL database.

    PostgreSQL is administered as ``postgres`` on the same host (trust on loopback, as in
    the development setup); the database is owned by the URL's user, created when missing.
    """
    parsed = urlparse(url)
    if parsed.scheme.startswith("sqlite"):
        path = Path(parsed.path)
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
        return
    import psycopg
    from psycopg import sql

    name = parsed.path.lstrip("/")
    owner = parsed.username or "postgres"
    admin = f"postgresql://postgres@{parsed.hostname or '127.0.0.1'}:{parsed.port or 5432}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner]).fetchone():
            password = sql.Literal(parsed.password or "")
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(owner), password))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))


@dataclass
class Proc:
    """One supervised child in its own process group; ``kill`` is a SIGKILL of the whole group."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Proc:
        log = open(self.log_path, "ab")
        log.write(f"\n=== start {self.starts + 1} of {self.name} ===\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.starts += 1
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and everything it forked: a crash, an OOM kill, a lost VM."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the main process (it stops its own workers), then clear the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass
class LiveService:
    """Moto, the proxies and the service's processes; ``start()`` brings them up, ``close()`` down."""

    work: Path
    database_url: str
    ckan_url: str
    ckan_token: str
    redis_url: str = ""
    forwarder: bool = False  # bucket notifications go to INBOX_QUEUE; the caller forwards them
    extra_env: dict[str, str] = field(default_factory=dict)
    web_workers: int = 2
    q_workers: int = 2

    def __post_init__(self) -> None:
        self.moto_port = free_port()
        self.web_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.moto_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.secret_key = secrets.token_urlsafe(50)
        self.ckan_proxy = TcpProxy(self.ckan_url)
        self.queue_proxy = TcpProxy(self.endpoint)
        self.procs: dict[str, Proc] = {}
        self.moto: Proc | None = None
        self.events_queue_url = ""
        self.inbox_queue_url = ""

    # -- clients -----------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    # -- environment -------------------------------------------------------------------------

    def django_environ(self) -> dict[str, str]:
        """The service's configuration as environment variables (the drill's own Django uses it too)."""
        env = {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": self.database_url,
            "STORAGE_ENDPOINT_URL": self.endpoint,
            "STORAGE_REGION": "us-east-1",
            "STORAGE_BUCKET": BUCKET,
            "STORAGE_ACCESS_KEY_ID": ACCESS_KEY,
            "STORAGE_SECRET_ACCESS_KEY": SECRET_KEY,
            "STORAGE_KEY_PREFIX": PREFIX,
            "STORAGE_PUBLIC_BASE_URL": f"{self.endpoint}/{BUCKET}",
            "CKAN_URL": self.ckan_proxy.url,
            "CKAN_API_TOKEN": self.ckan_token,
            "SQS_QUEUE_URL": self.events_queue_url.replace(self.endpoint, self.queue_proxy.url),
            "AWS_ENDPOINT_URL_SQS": self.queue_proxy.url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "Q_WORKERS": str(self.q_workers),
            "PYTHONUNBUFFERED": "1",
        }
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        return env

    def child_environ(self) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("STORAGE_", "CKAN_", "SQS_", "CF_", "AWS_", "DJANGO_", "REDIS_", "Q_", "LINK_"))
            and "proxy" not in k.lower()
        }
        return {**base, **self.django_environ()}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LiveService:
        self.work.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)]
        self.moto = Proc("moto", moto, env, self.work / "moto.log").start()
        wait_http(f"{self.endpoint}/moto-api/")
        self._wire_storage()
        self.ckan_proxy.start()
        self.queue_proxy.start()
        prepare_database(self.database_url)
        if self.redis_url:
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        env = self.child_environ()
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
        sys.path.insert(0, str(ROOT))
        from dashboard.management.commands.serve import gunicorn_command

        web = [*gunicorn_command(f"127.0.0.1:{self.web_port}", workers=self.web_workers), "--threads", "4"]
        self.procs = {
            "web": Proc("web", web, env, self.work / "web.log"),
            "qcluster": Proc("qcluster", [*manage, "run_qcluster"], env, self.work / "qcluster.log"),
            "consumer": Proc(
                "consumer", [*manage, "consume_sqs", "--wait-seconds", "1"], env, self.work / "consumer.log"
            ),
        }
        for proc in self.procs.values():
            proc.start()
        wait_http(f"{self.web_url}/healthz")
        return self

    def _wire_storage(self) -> None:
        s3, sqs = self.client("s3"), self.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        self.events_queue_url = sqs.create_queue(QueueName=EVENTS_QUEUE)["QueueUrl"]
        target = self.events_queue_url
        if self.forwarder:
            self.inbox_queue_url = sqs.create_queue(QueueName=INBOX_QUEUE)["QueueUrl"]
            target = self.inbox_queue_url
        arn = sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        rule = {"Id": "uploads-events", "QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [rule]}
        )

    def run_manage(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env={**self.child_environ(), **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.ckan_proxy.release()
        self.ckan_proxy.stop()
        self.queue_proxy.stop()
        if self.moto is not None:
            self.moto.stop()


@contextlib.contextmanager
def live_service(**kwargs: Any) -> Iterator[LiveService]:
    service = LiveService(**kwargs)
    try:
        yield service.start()
    finally:
        service.close()


def make_resources(site: Any, count: int, prefix: str) -> tuple[str, dict[str, str]]:
    """An org with an editor, and ``count`` resources, one per dataset (CKAN's resource_patch rewrites
    the whole dataset, so two resources of one dataset patched at once can undo each other in CKAN)."""
    editor = site.create_user(f"{prefix}-editor")
    org = site.create_org(f"{prefix}-org")
    site.add_member(org["id"], editor.name, "editor")

    def one(n: int) -> tuple[str, str]:
        url = f"https://example.com/original/{n}.csv"
        for attempt in range(5):  # the local CKAN is shared: a reset connection is tried again
            try:
                dataset = site.create_dataset(
                    org["id"], f"{prefix}-{n}", resources=[{"url": url, "name": f"r{n}.csv", "format": "CSV"}]
                )
                return dataset["resources"][0]["id"], url
            except requests.RequestException:
                if attempt == 4:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(3) as pool:
        pairs = list(pool.map(one, range(count)))
    return editor.token, dict(pairs)


class ApiClient:
    """An API client as a program would write one: retries what the service says is temporary."""

    def __init__(self, base_url: str, token: str, *, patience: float = 300) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = token
        self.patience = patience
        self.retries = 0

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        deadline = time.monotonic() + self.patience
        while True:
            try:
                response = self.session.request(method, url, timeout=30, **kwargs)
                if response.status_code < 500 and response.status_code != 429:
                    return response
                problem = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                problem = type(exc).__name__
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {url.split('?')[0]} kept failing ({problem}) for {self.patience:g} s")
            self.retries += 1
            time.sleep(1)

    def issue(self, resource_id: str, *, filename: str, data: bytes) -> dict[str, Any]:
        import hashlib

        body = {
            "resource_id": resource_id,
            "filename": filename,
            "content_type": "text/csv",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        response = self._call("POST", f"{self.base_url}/api/v1/uploads", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"issue answered {response.status_code}: {response.text[:300]}")
        return dict(response.json())

    def put(self, issued: dict[str, Any], data: bytes) -> None:
        response = requests.put(issued["upload_url"], data=data, headers=issued["headers"], timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"PUT answered {response.status_code}: {response.text[:300]}")

    def complete(self, issued: dict[str, Any]) -> int:
        """POST complete; 202 once the object is there, 409 ``not_uploaded`` before the PUT."""
        url = issued["complete_url"]
        if url.startswith("/"):
            url = self.base_url + url
        return self._call("POST", url).status_code
