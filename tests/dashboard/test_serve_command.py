"""`manage.py serve` (what `make run` starts): web + qcluster + consumer, embedded moto, one Ctrl-C."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import boto3
import pytest
import requests

from tests.support.processes import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration


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


def group_members(pgid: int) -> list[int]:
    """Live processes in a process group (from /proc: `ps` has no portable group filter)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def child_commands(pid: int) -> dict[str, int]:
    """serve's children by what they run (`web`, `run_qcluster`, `consume_sqs`) -> pid."""
    out = subprocess.run(["ps", "ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        child_pid, args = line.strip().split(" ", 1)
        name = "web" if "gunicorn" in args else args.split()[-1]
        found[name] = int(child_pid)
    return found


def serve_environ(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "CKAN_", "SQS_", "CF_", "AWS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "Q_WORKERS": "2",
            "DJANGO_DEBUG": "1",  # the local profile, as `make run` sets it
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
    return env


def put_and_wait_for_event(storage_port: int, tmp_path, key: str) -> list[str]:
    """Put an object into the embedded bucket; return the event keys once the consumer recorded it."""
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{storage_port}",
        region_name="us-east-1",
        aws_access_key_id="embedded-moto",
        aws_secret_access_key="embedded-moto",
    )
    s3.put_object(Bucket="ckan-uploads", Key=key, Body=b"a,b\n")

    def recorded_keys() -> list[str]:
        with sqlite3.connect(tmp_path / "db.sqlite3") as db:
            keys = [k for (k,) in db.execute("SELECT key FROM uploads_storageevent")]
        return keys if key in keys else []

    return wait_for(recorded_keys, timeout=60, what=f"the SQS consumer to record {key}")  # type: ignore[return-value]


def healthz(port: int) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
    except requests.RequestException:
        return None


def test_it_serves_with_embedded_storage_and_stops_everything_on_ctrl_c(tmp_path):
    port, storage_port = free_port(), free_port()
    env = serve_environ(tmp_path)
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
        assert put_and_wait_for_event(storage_port, tmp_path, "stray/object.csv") == ["stray/object.csv"]
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        log.close()
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def start_serve(tmp_path, *args: str) -> tuple[subprocess.Popen[bytes], int, int]:
    port, storage_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--storage-port",
            str(storage_port),
            *args,
        ],
        cwd=ROOT,
        env=serve_environ(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    wait_for(lambda: healthz(port) == 200, timeout=90, what="the web server to answer /healthz")
    wait_for(lambda: len(child_commands(proc.pid)) == 3, timeout=30, what="web, run_qcluster and consume_sqs")
    return proc, port, storage_port


def test_a_child_that_dies_is_restarted_and_the_service_keeps_answering(tmp_path):
    proc, port, storage_port = start_serve(tmp_path)
    try:
        before = child_commands(proc.pid)
        os.kill(before["consume_sqs"], signal.SIGKILL)
        os.kill(before["run_qcluster"], signal.SIGKILL)
        answers = []

        def restarted() -> bool:
            answers.append(healthz(port))
            now = child_commands(proc.pid)
            return all(now.get(name) not in (None, before[name]) for name in ("consume_sqs", "run_qcluster"))

        wait_for(restarted, timeout=60, interval=0.5, what="serve to restart the consumer and the cluster")
        assert set(answers) == {200}, answers  # the web server answered throughout
        assert proc.poll() is None
        log = (tmp_path / "serve.log").read_text()
        assert "sqs-consumer exited with -9; restarting it in " in log
        assert "worker exited with -9; restarting it in " in log
        assert child_commands(proc.pid)["web"] == before["web"]  # the others were left alone
        # The restarted consumer works: an object put into the embedded bucket becomes an event.
        assert "stray/after-restart.csv" in put_and_wait_for_event(storage_port, tmp_path, "stray/after-restart.csv")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_sigterm_stops_every_child_within_the_bound_even_one_that_does_not_listen(tmp_path):
    proc, port, _ = start_serve(tmp_path, "--stop-timeout", "3")
    children = child_commands(proc.pid)
    everyone = [pid for pgid in children.values() for pid in group_members(pgid)]
    assert len(everyone) > len(children)  # gunicorn and qcluster workers, in their leaders' groups
    os.kill(children["consume_sqs"], signal.SIGSTOP)  # a stopped process handles no SIGTERM
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 0
    assert took < 3 + 5, took
    time.sleep(0.5)
    assert [pid for pid in everyone if alive(pid)] == []
    assert "sqs-consumer did not stop within 3 s: killing its process group" in (tmp_path / "serve.log").read_text()
    assert healthz(port) is None


def test_serve_starts_the_azure_consumer_when_its_queue_is_configured():
    from dashboard.management.commands.serve import Command

    options = {"bind": "127.0.0.1:0", "web_workers": 1}
    names = [child.name for child in Command()._children({"AZURE_EVENTS_QUEUE": "blob-events"}, options)]
    assert names == ["web", "worker", "azure-consumer"]
    commands = {child.name: child.command[-1] for child in Command()._children({"AZURE_EVENTS_QUEUE": "q"}, options)}
    assert commands["azure-consumer"] == "consume_azure_queue"
    assert [c.name for c in Command()._children({}, options)] == ["web", "worker"]
