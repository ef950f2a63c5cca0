"""Test helpers for a REAL local CKAN 2.12 started by ``scripts/local_ckan.py``.

Usage in a test (pytest)::

    from tests.support.ckan_site import CkanUnavailable, ensure_local_ckan, make_world

    @pytest.fixture(scope="session")
    def ckan_site():
        try:
            return ensure_local_ckan()
        except CkanUnavailable as exc:  # no PostgreSQL on this machine
            pytest.skip(str(exc))

    def test_editor_can_patch(ckan_site):
        world = make_world(ckan_site)
        res = ckan_site.client(world.editor.token).action(
            "resource_patch", id=world.resource["id"], url="https://example.com/new.csv")

Every helper talks to CKAN's Action API (``POST /api/3/action/<name>``) with
``Authorization: <raw token>`` (the only header form CKAN accepts).  Names get
a uuid suffix, so tests never collide and never need cleaning up.
Search (``package_search``) always returns 0 hits: Solr is a stub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_CKAN_SCRIPT = REPO_ROOT / "scripts" / "local_ckan.py"
STATE_FILE = REPO_ROOT / ".ckan" / "state.json"
UP_TIMEOUT = 600  # cold `up` installs CKAN first (~30-60 s); be generous
EXIT_NO_POSTGRES = 3


class CkanUnavailable(Exception):
    """The local CKAN cannot run here (PostgreSQL unreachable): skip, don't fail."""


class CkanActionError(RuntimeError):
    """A CKAN action answered with success=false or a non-2xx status."""

    def __init__(self, action: str, status: int, body: Any):
        self.action = action
        self.status = status
        self.body = body
        self.error = body.get("error") if isinstance(body, dict) else None
        detail = json.dumps(self.error if self.error is not None else body, default=str)
        super().__init__(f"CKAN action {action} -> HTTP {status}: {detail[:2000]}")


@dataclass(frozen=True)
class CkanUser:
    name: str
    id: str
    token: str


def _slug(prefix: str) -> str:
    base = re.sub(r"[^a-z0-9_-]+", "-", prefix.lower()).strip("-_") or "x"
    return f"{base[:60]}-{uuid.uuid4().hex[:12]}"


class CkanClient:
    """Action-API client acting as one token (or anonymously with token=None)."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never send 127.0.0.1 traffic to a proxy
        if token:
            self.session.headers["Authorization"] = token

    def call(self, name: str, /, **data: Any) -> requests.Response:
        """POST the action and return the raw response (no status check)."""
        return self.session.post(f"{self.url}/api/3/action/{name}", json=data, timeout=self.timeout)

    def action(self, name: str, /, **data: Any) -> Any:
        """Call an action and return its ``result``; raise CkanActionError otherwise."""
        resp = self.call(name, **data)
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 300 or not isinstance(body, dict) or body.get("success") is not True:
            raise CkanActionError(name, resp.status_code, body)
        return body["result"]

    def resource_show(self, id: str) -> dict[str, Any]:
        return self.action("resource_show", id=id)

    def resource_patch(self, id: str, **fields: Any) -> dict[str, Any]:
        return self.action("resource_patch", id=id, **fields)


class CkanSite(CkanClient):
    """The local CKAN, driven as its sysadmin (``ckan_admin``)."""

    def __init__(self, url: str, sysadmin_token: str, sysadmin: str = "ckan_admin", timeout: float = 30.0):
        super().__init__(url, sysadmin_token, timeout=timeout)
        self.sysadmin_token = sysadmin_token
        self.sysadmin = sysadmin

    def client(self, token: str | None) -> CkanClient:
        """A client acting as another user (``None``: anonymous)."""
        return CkanClient(self.url, token, timeout=self.timeout)

    def create_user(self, prefix: str = "user") -> CkanUser:
        name = _slug(prefix)
        user = self.action(
            "user_create",
            name=name,
            email=f"{name}@example.com",
            password=uuid.uuid4().hex,
            fullname=f"Test {prefix}",
        )
        token = self.action("api_token_create", user=name, name="tests")["token"]
        return CkanUser(name=user["name"], id=user["id"], token=token)

    def create_org(self, prefix: str = "org") -> dict[str, Any]:
        name = _slug(prefix)
        return self.action("organization_create", name=name, title=f"Test org {name}")

    def add_member(self, org_id: str, username: str, role: str) -> dict[str, Any]:
        """role: ``admin``, ``editor`` (may write datasets) or ``member`` (read private)."""
        return self.action("organization_member_create", id=org_id, username=username, role=role)

    def create_dataset(
        self, org_id: str, prefix: str = "dataset", private: bool = False, **extra: Any
    ) -> dict[str, Any]:
        name = _slug(prefix)
        data: dict[str, Any] = {"name": name, "title": f"Test dataset {name}", "owner_org": org_id, "private": private}
        data.update(extra)
        return self.action("package_create", **data)

    def create_resource(self, package_id: str, **fields: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"url": "https://example.com/data.csv", "name": "data.csv", "format": "CSV"}
        data.update(fields)
        return self.action("resource_create", package_id=package_id, **data)


@dataclass
class World:
    """A dataset (public unless asked otherwise) in an org, with users of each access level."""

    site: CkanSite
    org: dict[str, Any]
    dataset: dict[str, Any]
    resource: dict[str, Any]
    editor: CkanUser  # org role "editor": may resource_patch
    viewer: CkanUser  # org role "member": may resource_show, 403 on writes
    outsider: CkanUser  # no membership: 403 on writes (and on reads of a private dataset)


def make_world(site: CkanSite, prefix: str = "t", *, private: bool = False) -> World:
    org = site.create_org(f"{prefix}-org")
    dataset = site.create_dataset(org["id"], f"{prefix}-ds", private=private, notes="Dataset made by tests")
    resource = site.create_resource(
        dataset["id"],
        name="report.csv",
        url="https://example.com/original/report.csv",
        description="Original description, must survive patches",
        reconciler_note="extra field kept by CKAN",
    )
    editor = site.create_user(f"{prefix}-editor")
    viewer = site.create_user(f"{prefix}-viewer")
    outsider = site.create_user(f"{prefix}-outsider")
    site.add_member(org["id"], editor.name, "editor")
    site.add_member(org["id"], viewer.name, "member")
    return World(site, org, dataset, resource, editor, viewer, outsider)


_lock = threading.Lock()
_cached: CkanSite | BaseException | None = None


def _python3() -> str:
    return shutil.which("python3") or sys.executable


def ensure_local_ckan() -> CkanSite:
    """Start (or reuse) the local CKAN and return it; cached per process.

    Raises CkanUnavailable when PostgreSQL is unreachable (exit code 3),
    RuntimeError with the output tail on any other failure.
    """
    global _cached
    with _lock:
        if _cached is None:
            try:
                _cached = _start()
            except (CkanUnavailable, RuntimeError) as exc:
                _cached = exc
        if isinstance(_cached, BaseException):
            raise _cached
        return _cached


def _start() -> CkanSite:
    _run_up(["up"], {})
    state = json.loads(STATE_FILE.read_text())
    return CkanSite(state["url"], state["token"], sysadmin=state.get("sysadmin", "ckan_admin"))


S3FILESTORE_STATE_FILE = REPO_ROOT / ".ckan" / "s3filestore" / "state.json"
_s3filestore_cache: dict[tuple[str, str], CkanSite | BaseException] = {}


def ensure_s3filestore_ckan(endpoint: str, bucket: str, *, access_key: str, secret_key: str) -> tuple[CkanSite, dict]:
    """Start (or reuse) the second local CKAN, with ckanext-s3filestore on ``endpoint``/``bucket``.

    ``scripts/local_ckan.py up --s3filestore`` runs it in .ckan/s3filestore (its own port,
    database and Solr stand-in; the same .ckan/venv with the plugin installed), so the default
    CKAN the other tests use is not touched. The instance also has a CKAN 2.12 file storage on
    the bucket. Returns the site and its config: endpoint, bucket, storage_path (the plugin's)
    and files_storage ({name, path}). Raises CkanUnavailable without PostgreSQL.
    """
    with _lock:
        cached = _s3filestore_cache.get((endpoint, bucket))
        if cached is None:
            env = {
                "CKAN_LOCAL_S3FILESTORE_ACCESS_KEY_ID": access_key,
                "CKAN_LOCAL_S3FILESTORE_SECRET_ACCESS_KEY": secret_key,
            }
            try:
                _run_up(["up", "--s3filestore", endpoint, bucket], env)
                state = json.loads(S3FILESTORE_STATE_FILE.read_text())
                cached = CkanSite(state["url"], state["token"], sysadmin=state.get("sysadmin", "ckan_admin"))
            except (CkanUnavailable, RuntimeError) as exc:
                cached = exc
            _s3filestore_cache[(endpoint, bucket)] = cached
        if isinstance(cached, BaseException):
            raise cached
        state = json.loads(S3FILESTORE_STATE_FILE.read_text())
        return cached, {**state["s3filestore"], "files_storage": state["files_storage"]}


def _run_up(args: list[str], extra_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra_env)
    try:
        proc = subprocess.run(
            [_python3(), str(LOCAL_CKAN_SCRIPT), *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"scripts/local_ckan.py {' '.join(args[:2])} timed out after {UP_TIMEOUT}s") from exc
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode == EXIT_NO_POSTGRES:
        raise CkanUnavailable(output.splitlines()[-1] if output else "PostgreSQL not reachable")
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"scripts/local_ckan.py {' '.join(args[:2])} failed (exit {proc.returncode}):\n{tail}")
