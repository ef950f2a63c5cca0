"""Helpers for end-to-end tests of the upload → event → link pipeline on real parts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.support.moto import StorageWorld
from tests.support.processes import ROOT, child_environ, manage_process, wait_for
from uploads.models import Upload


def pipeline_environ(world: StorageWorld, *, ckan_url: str, ckan_token: str, **overrides: str) -> dict[str, str]:
    """Environment for qcluster and consumers: the test DB, moto, a CKAN, fast retries."""
    env = child_environ(
        **world.environ(),
        CKAN_URL=ckan_url,
        CKAN_API_TOKEN=ckan_token,
        LINK_RETRY_BASE_SECONDS="1",
        LINK_RETRY_MAX_SECONDS="2",
        LINK_MAX_ATTEMPTS="8",
        CKAN_TIMEOUT_SECONDS="5",
    )
    env.update(overrides)
    return env


def issue(client: Any, token: str, resource_id: str, *, filename: str, data: bytes, content_type: str) -> dict:
    """Ask the API (as a CKAN user) for an upload URL of ``data``."""
    response = client.post(
        "/api/v1/uploads",
        data=json.dumps(
            {
                "resource_id": resource_id,
                "filename": filename,
                "content_type": content_type,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=token,
    )
    assert response.status_code == 201, response.content
    return response.json()


def put(issued: dict, data: bytes) -> None:
    """PUT the file to its presigned URL, as a client would."""
    response = requests.put(issued["upload_url"], data=data, headers=issued["headers"], timeout=30)
    assert response.status_code == 200, response.text


def upload_as_editor(client: Any, ckan_world: Any, *, filename: str, data: bytes) -> dict:
    """Issue a CSV upload for the world's resource as its editor, and PUT ``data`` to it."""
    issued = issue(
        client,
        ckan_world.editor.token,
        ckan_world.resource["id"],
        filename=filename,
        data=data,
        content_type="text/csv",
    )
    put(issued, data)
    return issued


def world_environ(storage_world: StorageWorld, ckan_site: Any, **overrides: str) -> dict[str, str]:
    """pipeline_environ for the moto world and the local CKAN, linking with its sysadmin token."""
    return pipeline_environ(storage_world, ckan_url=ckan_site.url, ckan_token=ckan_site.sysadmin_token, **overrides)


def run_command(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run `manage.py <args>` to completion and return its output (fail on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@contextmanager
def qcluster(env: dict[str, str], log_path: Path) -> Iterator[Any]:
    """A real django-q2 cluster for the block; its log is printed if the block fails."""
    with manage_process("qcluster", env=env, log_path=log_path) as proc:
        try:
            yield proc
        except BaseException:
            if log_path.exists():
                sys.stderr.write(f"--- qcluster log ---\n{log_path.read_text(errors='replace')[-6000:]}\n")
            raise


def wait_for_state(upload_id: str, state: str, *, timeout: float = 60) -> Upload:
    """Poll the ledger until the upload reaches ``state``."""

    def reached() -> Upload | None:
        upload = Upload.objects.get(pk=upload_id)
        return upload if upload.state == state else None

    try:
        return wait_for(reached, timeout=timeout, interval=0.05, what=f"upload {upload_id} to be {state}")  # type: ignore[return-value]
    except AssertionError:
        upload = Upload.objects.get(pk=upload_id)
        attempts = list(upload.link_attempts.values_list("trigger", "outcome", "error"))
        raise AssertionError(
            f"upload {upload_id} is {upload.state} (last error {upload.last_error!r}, attempts {attempts}), "
            f"not {state} after {timeout} s"
        ) from None


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def monotonic_ms() -> float:
    return time.monotonic() * 1000
