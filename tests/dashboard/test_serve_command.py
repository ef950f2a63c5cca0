"""`manage.py serve` (what `make run` starts): web + qcluster + consumer, embedded moto, one Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import boto3
import pytest
import requests

from tests.support.processes import ROOT, wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read().split()
    return stat[2] != "Z"


def test_it_serves_with_embedded_storage_and_stops_everything_on_ctrl_c(tmp_path):
    port, storage_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "CKAN_", "SQS_", "CF_", "AWS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "DJANGO_DEBUG": "1",  # as `make run` sets it
        }
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}", "--storage-port", str(storage_port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, timeout=90, what="the web server to answer /healthz")
        output = (tmp_path / "serve.log").read_text()
        assert f"started an embedded moto S3 at http://127.0.0.1:{storage_port}" in output
        # The embedded storage really is there, with its bucket.
        assert requests.get(f"http://127.0.0.1:{storage_port}/ckan-uploads", timeout=5).status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5).status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=5).status_code == 200
        children = children_of(proc.pid)
        assert len(children) >= 3, output  # gunicorn, qcluster, consume_sqs
        # The consumer is alive and wired: an object put into the embedded bucket becomes an event.
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{storage_port}",
            region_name="us-east-1",
            aws_access_key_id="embedded-moto",
            aws_secret_access_key="embedded-moto",
        )
        s3.put_object(Bucket="ckan-uploads", Key="stray/object.csv", Body=b"a,b\n")

        def recorded_keys() -> list[str]:
            with sqlite3.connect(tmp_path / "db.sqlite3") as db:
                return [key for (key,) in db.execute("SELECT key FROM uploads_storageevent")]

        assert wait_for(recorded_keys, timeout=60, what="the SQS consumer to record the event") == ["stray/object.csv"]
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        log.close()
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
