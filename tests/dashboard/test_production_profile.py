"""A deployment that forgets DJANGO_DEBUG is a production one, and refuses to start insecurely."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest

from dashboard.management.commands.serve import gunicorn_command
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

PRODUCTION_DOC = ROOT / "docs" / "production.md"


def base_environ(tmp_path, **extra: str) -> dict[str, str]:
    keep = ("STORAGE_", "CKAN_", "DJANGO_", "METRICS_", "SQS_", "CF_", "AWS_")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
    environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        }
    )
    environ.update(extra)
    return environ


def documented_production_variables() -> dict[str, str]:
    """The `KEY=value` lines of the sh block in docs/production.md, placeholders filled in."""
    block = re.search(r"## The production variables.*?```sh\n(.*?)```", PRODUCTION_DOC.read_text(), re.S)
    assert block, "docs/production.md lost its block of production variables"
    variables = {}
    for line in block.group(1).splitlines():
        name, _, value = line.partition("=")
        variables[name] = secrets.token_urlsafe(50) if value.startswith("<") else value
    return variables


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    environ = base_environ(
        tmp_path,
        **documented_production_variables(),
        CKAN_URL="https://ckan.example.org",
        CKAN_API_TOKEN="service-token",
        STORAGE_BUCKET="ckan-uploads",
        STORAGE_ACCESS_KEY_ID="key",
        STORAGE_SECRET_ACCESS_KEY="secret",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_is_off_and_cookies_secure_when_nothing_is_set(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; print(s.DEBUG, s.SESSION_COOKIE_SECURE)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base_environ(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["False", "True"], result.stderr


@pytest.mark.parametrize("key", ["", "django-insecure-abc", "change-me"])
def test_manage_commands_refuse_a_development_secret_key_outside_debug(tmp_path, key):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=base_environ(tmp_path, DJANGO_SECRET_KEY=key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "uploads.E002" in result.stderr
    assert "DJANGO_SECRET_KEY is missing or a known development value" in result.stderr


def test_gunicorn_refuses_to_serve_with_the_development_secret_key(tmp_path):
    result = subprocess.run(
        gunicorn_command("127.0.0.1:0", workers=1),
        cwd=ROOT,
        env=base_environ(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3  # gunicorn's "worker failed to boot"
    assert "refusing to start" in result.stderr
    assert "uploads.E002" in result.stderr


def test_the_local_profile_still_starts_with_debug_on(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=base_environ(tmp_path, DJANGO_DEBUG="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "uploads.E002" not in result.stderr
