from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from dashboard import env
from uploads.checks import check_configuration

ROOT = Path(__file__).resolve().parents[2]


def ids(problems):
    return {problem.id for problem in problems}


def test_env_int_records_a_clear_error_for_a_bad_value(monkeypatch):
    monkeypatch.setattr(env, "CONFIG_ERRORS", [])
    monkeypatch.setenv("UPLOAD_URL_TTL", "soon")
    assert env.env_int("UPLOAD_URL_TTL", 3600, minimum=1, maximum=604800) == 3600
    monkeypatch.setenv("UPLOAD_URL_TTL", "999999")
    assert env.env_int("UPLOAD_URL_TTL", 3600, minimum=1, maximum=604800) == 3600
    assert env.CONFIG_ERRORS == [
        "UPLOAD_URL_TTL='soon' is not a whole number.",
        "UPLOAD_URL_TTL=999999 is above the maximum of 604800.",
    ]


def test_env_bool_accepts_the_usual_spellings(monkeypatch):
    monkeypatch.setattr(env, "CONFIG_ERRORS", [])
    for raw, expected in (("yes", True), ("0", False), ("TRUE", True), ("off", False)):
        monkeypatch.setenv("X_FLAG", raw)
        assert env.env_bool("X_FLAG", not expected) is expected
    monkeypatch.setenv("X_FLAG", "maybe")
    assert env.env_bool("X_FLAG", True) is True
    assert env.CONFIG_ERRORS == ["X_FLAG='maybe' is not a boolean (use true or false)."]


def test_it_is_quiet_when_everything_is_configured():
    with override_settings(
        DEBUG=True,
        CKAN_URL="https://ckan.example.org",
        CKAN_API_TOKEN="t",
        STORAGE_BUCKET="b",
        STORAGE_ACCESS_KEY_ID="k",
        STORAGE_SECRET_ACCESS_KEY="s",
        EVENTS_WEBHOOK_SECRET="x" * 32,
    ):
        assert check_configuration() == []


def test_it_reports_partial_storage_and_bad_urls():
    with override_settings(
        DEBUG=True,
        CKAN_URL="ckan.example.org",
        CKAN_API_TOKEN="t",
        STORAGE_BUCKET="b",
        STORAGE_ACCESS_KEY_ID="",
        STORAGE_SECRET_ACCESS_KEY="",
        STORAGE_PUBLIC_BASE_URL="files",
        STORAGE_KEY_PREFIX="x",
        LINK_RETRY_BASE_SECONDS=100,
        LINK_RETRY_MAX_SECONDS=10,
        LINK_CLAIM_TIMEOUT_SECONDS=10,
        EVENTS_WEBHOOK_SECRET="short",
    ):
        assert ids(check_configuration()) == {
            "uploads.E003",
            "uploads.E004",
            "uploads.E005",
            "uploads.E006",
            "uploads.E007",
            "uploads.E008",
            "uploads.E009",
        }


def test_it_requires_a_secret_key_outside_debug():
    with override_settings(DEBUG=False, SECRET_KEY="dev-only-insecure-secret-key-change-me-in-production-0123456789"):
        assert "uploads.E002" in ids(check_configuration())


def test_it_warns_when_ckan_and_storage_are_missing():
    with override_settings(
        CKAN_URL="", STORAGE_BUCKET="", STORAGE_ACCESS_KEY_ID="", STORAGE_SECRET_ACCESS_KEY="", STORAGE_ENDPOINT_URL=""
    ):
        assert {"uploads.W001", "uploads.W003"} <= ids(check_configuration())


def test_manage_check_prints_bad_values_as_one_clear_list_not_a_traceback(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "CKAN_", "UPLOAD_", "LINK_"))}
    environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "UPLOAD_URL_TTL": "1w",
            "LINK_MAX_ATTEMPTS": "-3",
            "DJANGO_DEBUG": "perhaps",
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "UPLOAD_URL_TTL='1w' is not a whole number." in result.stderr
    assert "LINK_MAX_ATTEMPTS=-3 is below the minimum of 1." in result.stderr
    assert "DJANGO_DEBUG='perhaps' is not a boolean" in result.stderr


@pytest.mark.parametrize("url", ["nosuchdb://x", "mysql+nothing://x"])
def test_a_database_url_that_cannot_be_read_is_reported_by_check(tmp_path, url):
    environ = dict(os.environ, DJANGO_SETTINGS_MODULE="dashboard.settings", DOTENV_PATH=os.devnull, DATABASE_URL=url)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "DATABASE_URL could not be read" in result.stderr


def test_it_reports_an_unknown_private_dataset_policy_and_acls_on_r2():
    with override_settings(
        PRIVATE_DATASET_UPLOADS="open",
        STORAGE_OBJECT_ACLS=True,
        STORAGE_ENDPOINT_URL="https://abc.r2.cloudflarestorage.com",
    ):
        assert {"uploads.E010", "uploads.E011"} <= ids(check_configuration())


def test_it_reports_an_unknown_link_style_and_ckan_files_without_its_storage():
    with override_settings(LINK_STYLE="bucket"):
        assert "uploads.E016" in ids(check_configuration())
    with override_settings(LINK_STYLE="ckan_files", CKAN_FILES_STORAGE=""):
        assert "uploads.E017" in ids(check_configuration())
    with override_settings(LINK_STYLE="ckan_files", CKAN_FILES_STORAGE="uploads"):
        assert not {"uploads.E016", "uploads.E017"} & ids(check_configuration())


AZURE_OK = {
    "DEBUG": True,
    "CKAN_URL": "https://ckan.example.org",
    "CKAN_API_TOKEN": "t",
    "STORAGE_BACKEND": "azure",
    "AZURE_STORAGE_ACCOUNT": "acct",
    "AZURE_STORAGE_KEY": "a2V5",
    "AZURE_STORAGE_CONTAINER": "uploads",
    "STORAGE_BUCKET": "",
    "STORAGE_ACCESS_KEY_ID": "",
    "STORAGE_SECRET_ACCESS_KEY": "",
}


def test_azure_is_quiet_when_configured_and_needs_no_s3_settings():
    with override_settings(**AZURE_OK):
        assert check_configuration() == []
    with override_settings(**{**AZURE_OK, "AZURE_STORAGE_KEY": "", "AZURE_STORAGE_CONNECTION_STRING": "x=y"}):
        assert check_configuration() == []


def test_partial_azure_storage_names_what_is_missing():
    with override_settings(**{**AZURE_OK, "AZURE_STORAGE_KEY": "", "AZURE_STORAGE_CONTAINER": ""}):
        [problem] = [p for p in check_configuration() if p.id == "uploads.E004"]
    assert "AZURE_STORAGE_CONTAINER" in problem.msg and "AZURE_STORAGE_KEY" in problem.msg


def test_an_unknown_backend_object_acls_on_azure_and_a_short_azure_key_are_errors():
    with override_settings(**{**AZURE_OK, "STORAGE_BACKEND": "gcs"}):
        assert "uploads.E012" in ids(check_configuration())
    with override_settings(**{**AZURE_OK, "STORAGE_OBJECT_ACLS": True}):
        assert "uploads.E013" in ids(check_configuration())
    with override_settings(**{**AZURE_OK, "AZURE_EVENTS_WEBHOOK_KEY": "short"}):
        assert "uploads.E014" in ids(check_configuration())
    with override_settings(**{**AZURE_OK, "AZURE_STORAGE_ENDPOINT": "localhost:10000"}):
        assert "uploads.E005" in ids(check_configuration())


def test_an_azure_queue_without_credentials_is_an_error_even_on_s3():
    with override_settings(
        STORAGE_BACKEND="s3",
        AZURE_EVENTS_QUEUE="blob-events",
        AZURE_STORAGE_ACCOUNT="",
        AZURE_STORAGE_KEY="",
        AZURE_STORAGE_CONNECTION_STRING="",
    ):
        assert "uploads.E015" in ids(check_configuration())


def test_values_the_settings_could_not_read_are_reported_through_settings():
    with override_settings(CONFIG_ERRORS=["X_FLAG='maybe' is not a boolean (use true or false)."]):
        assert "uploads.E001" in ids(check_configuration())
