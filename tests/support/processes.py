"""Child processes of the service (qcluster, consumers) run against the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on loopback right now (for a server a test or benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    """Wait until ``url`` answers HTTP at all (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.2)


def current_database_url() -> str:
    """A DATABASE_URL for the database the tests are using right now."""
    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    user = quote(s.get("USER") or "", safe="")
    password = quote(s.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def child_environ(**overrides: str) -> dict[str, str]:
    """The environment of a child process: the test database, no .env, plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "CKAN_", "SQS_", "CF_", "AZURE_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            # Children run with debug off, so they need a real key: the tests' own, because
            # django-q signs tasks with it (a task enqueued here must verify there).
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": current_database_url(),
            "PYTHONUNBUFFERED": "1",
            "Q_WORKERS": "2",
        }
    )
    env.update(overrides)
    return env


@contextmanager
def manage_process(*args: str, env: dict[str, str], log_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `manage.py <args>` in the background for the duration of the block."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process_group(proc)
        if log_path:
            log.close()  # type: ignore[union-attr]


def stop_process_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a child, then anything it left behind in its process group (qcluster forks workers).

    The signal goes to the main process only: a qcluster whose workers get SIGTERM directly
    hangs until it is killed, while its main process stops them cleanly in under a second.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(
    condition: Callable[[], object], *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> object:
    """Poll until ``condition()`` is truthy; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
