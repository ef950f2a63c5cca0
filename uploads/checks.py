"""System checks: bad configuration is reported at startup, in one readable list."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register, run_checks
from django.core.exceptions import ImproperlyConfigured

from uploads.stores import BACKENDS

# Values that appear in this repository or in Django's templates: never a production secret.
_DEVELOPMENT_KEYS = {"", "change-me", "changeme", "secret"}


def is_development_secret_key(key: str) -> bool:
    """True for a missing secret key or one published as a development value."""
    return key in _DEVELOPMENT_KEYS or key == settings.DEV_SECRET_KEY or key.startswith("django-insecure-")


def refuse_to_start_on_errors() -> None:
    """Raise ImproperlyConfigured when a system check reports an error.

    manage.py commands run the checks themselves; a WSGI server (gunicorn) does not, so the
    WSGI module calls this and the server refuses to serve a misconfigured deployment.
    """
    errors = [message for message in run_checks() if message.is_serious() and not message.is_silenced()]
    if errors:
        lines = "\n".join(
            f"  {message.id}: {message.msg}" + (f" ({message.hint})" if message.hint else "") for message in errors
        )
        raise ImproperlyConfigured(f"refusing to start; fix the configuration:\n{lines}")


def _is_http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in {"http", "https"} and bool(parsed.netloc)


@register(Tags.compatibility)
def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """Validate the environment-driven settings."""
    # Values the settings module could not read (dashboard.env collects them as it reads the environment).
    problems: list[Error | Warning] = [
        Error(message, id="uploads.E001") for message in getattr(settings, "CONFIG_ERRORS", [])
    ]

    if not settings.DEBUG and is_development_secret_key(settings.SECRET_KEY):
        problems.append(
            Error(
                "DJANGO_SECRET_KEY is missing or a known development value, and debug is off.",
                hint="Set DJANGO_SECRET_KEY to a long random value (python -c 'import secrets; "
                "print(secrets.token_urlsafe(50))'), or DJANGO_DEBUG=1 on a development machine.",
                id="uploads.E002",
            )
        )

    if settings.CKAN_URL and not _is_http_url(settings.CKAN_URL):
        problems.append(Error(f"CKAN_URL={settings.CKAN_URL!r} is not an http(s) URL.", id="uploads.E003"))
    if not settings.CKAN_URL:
        problems.append(
            Warning(
                "CKAN_URL is not set: upload URLs cannot be issued and nothing can be linked.",
                hint="Run `make ckan` for a local CKAN, or set CKAN_URL and CKAN_API_TOKEN.",
                id="uploads.W001",
            )
        )
    elif not settings.CKAN_API_TOKEN:
        problems.append(
            Warning("CKAN_API_TOKEN is not set: uploads can be issued but never linked.", id="uploads.W002")
        )

    if settings.STORAGE_BACKEND not in BACKENDS:
        problems.append(
            Error(
                f"STORAGE_BACKEND={settings.STORAGE_BACKEND!r} must be one of {', '.join(BACKENDS)}.", id="uploads.E012"
            )
        )
    elif settings.STORAGE_BACKEND == "azure":
        problems.extend(_azure_storage_problems())
    else:
        problems.extend(_s3_storage_problems())
    for name in ("STORAGE_ENDPOINT_URL", "STORAGE_PUBLIC_BASE_URL", "AZURE_STORAGE_ENDPOINT", "AZURE_QUEUE_ENDPOINT"):
        value = getattr(settings, name)
        if value and not _is_http_url(value):
            problems.append(Error(f"{name}={value!r} is not an http(s) URL.", id="uploads.E005"))
    if settings.STORAGE_KEY_PREFIX and not settings.STORAGE_KEY_PREFIX.endswith("/"):
        problems.append(Error("STORAGE_KEY_PREFIX must end with '/'.", id="uploads.E006"))
    if settings.LINK_RETRY_BASE_SECONDS > settings.LINK_RETRY_MAX_SECONDS:
        problems.append(Error("LINK_RETRY_BASE_SECONDS must not exceed LINK_RETRY_MAX_SECONDS.", id="uploads.E007"))
    if settings.LINK_CLAIM_TIMEOUT_SECONDS <= settings.CKAN_TIMEOUT_SECONDS:
        problems.append(
            Error(
                "LINK_CLAIM_TIMEOUT_SECONDS must exceed CKAN_TIMEOUT_SECONDS, or the sweep could release a claim "
                "while its worker is still waiting for CKAN.",
                id="uploads.E009",
            )
        )
    if settings.SWEEP_HEAD_ISSUED_LIMIT > 1000:
        problems.append(
            Warning(
                f"SWEEP_HEAD_ISSUED_LIMIT={settings.SWEEP_HEAD_ISSUED_LIMIT}: a sweep HEADs that many objects one "
                "after another every minute: a slow bucket can make one sweep outlast the next.",
                id="uploads.W004",
            )
        )
    if settings.PRIVATE_DATASET_UPLOADS not in {"refuse", "public"}:
        problems.append(
            Error(
                f"PRIVATE_DATASET_UPLOADS={settings.PRIVATE_DATASET_UPLOADS!r} must be 'refuse' or 'public' "
                "(until fixed, private datasets' files are refused).",
                id="uploads.E010",
            )
        )
    if settings.LINK_STYLE not in {"public", "s3filestore", "ckan_files"}:
        problems.append(
            Error(
                f"LINK_STYLE={settings.LINK_STYLE!r} must be 'public', 's3filestore' or 'ckan_files' "
                "(see docs/link-styles.md).",
                id="uploads.E016",
            )
        )
    if settings.LINK_STYLE == "ckan_files" and not settings.CKAN_FILES_STORAGE:
        problems.append(
            Error(
                "LINK_STYLE=ckan_files needs CKAN_FILES_STORAGE: the name of the CKAN file storage on the bucket.",
                id="uploads.E017",
            )
        )
    if settings.STORAGE_OBJECT_ACLS and "r2.cloudflarestorage.com" in settings.STORAGE_ENDPOINT_URL:
        problems.append(
            Error(
                "STORAGE_OBJECT_ACLS is on but R2 has no object ACLs: turn it off (see docs/privacy.md).",
                id="uploads.E011",
            )
        )
    if settings.EVENTS_WEBHOOK_SECRET and len(settings.EVENTS_WEBHOOK_SECRET) < 16:
        problems.append(Error("EVENTS_WEBHOOK_SECRET must be at least 16 characters.", id="uploads.E008"))
    if settings.AZURE_EVENTS_WEBHOOK_KEY and len(settings.AZURE_EVENTS_WEBHOOK_KEY) < 16:
        problems.append(Error("AZURE_EVENTS_WEBHOOK_KEY must be at least 16 characters.", id="uploads.E014"))
    if settings.AZURE_EVENTS_QUEUE and not (
        settings.AZURE_STORAGE_CONNECTION_STRING or (settings.AZURE_STORAGE_ACCOUNT and settings.AZURE_STORAGE_KEY)
    ):
        problems.append(
            Error(
                "AZURE_EVENTS_QUEUE is set but there is no Azure credential: set AZURE_STORAGE_ACCOUNT and "
                "AZURE_STORAGE_KEY, or AZURE_STORAGE_CONNECTION_STRING.",
                id="uploads.E015",
            )
        )
    # Failure notices (a chat webhook URL is a credential: the message does not repeat it).
    if settings.NOTIFY_WEBHOOK_URL and not _is_http_url(settings.NOTIFY_WEBHOOK_URL):
        problems.append(Error("NOTIFY_WEBHOOK_URL is not an http(s) URL.", id="uploads.E021"))
    if settings.NOTIFY_ADMIN_BASE_URL and not _is_http_url(settings.NOTIFY_ADMIN_BASE_URL):
        problems.append(Error("NOTIFY_ADMIN_BASE_URL is not an http(s) URL.", id="uploads.E022"))
    if (settings.NOTIFY_EMAILS or settings.NOTIFY_WEBHOOK_URL) and not settings.NOTIFY_ADMIN_BASE_URL:
        problems.append(
            Warning(
                "NOTIFY_ADMIN_BASE_URL is not set: failure notices link to the admin by path only.",
                hint="Set it to where stewards open the admin, e.g. https://uploads.example.org",
                id="uploads.W021",
            )
        )
    return problems


def _s3_storage_problems() -> list[Error | Warning]:
    problems: list[Error | Warning] = []
    storage_values = {
        "STORAGE_BUCKET": settings.STORAGE_BUCKET,
        "STORAGE_ACCESS_KEY_ID": settings.STORAGE_ACCESS_KEY_ID,
        "STORAGE_SECRET_ACCESS_KEY": settings.STORAGE_SECRET_ACCESS_KEY,
    }
    given = [name for name, value in storage_values.items() if value]
    if (given and len(given) < len(storage_values)) or (settings.STORAGE_ENDPOINT_URL and not given):
        missing = [name for name, value in storage_values.items() if not value]
        problems.append(Error(f"Object storage is partly configured: set {', '.join(missing)}.", id="uploads.E004"))
    elif not given:
        problems.append(
            Warning(
                "No object storage is configured: upload URLs cannot be issued.",
                hint="`make run` starts an embedded moto S3 in this case; set STORAGE_* for R2 or S3.",
                id="uploads.W003",
            )
        )
    return problems


def _azure_storage_problems() -> list[Error | Warning]:
    problems: list[Error | Warning] = []
    has_credential = bool(
        settings.AZURE_STORAGE_CONNECTION_STRING or (settings.AZURE_STORAGE_ACCOUNT and settings.AZURE_STORAGE_KEY)
    )
    if not settings.AZURE_STORAGE_CONTAINER or not has_credential:
        missing = [] if settings.AZURE_STORAGE_CONTAINER else ["AZURE_STORAGE_CONTAINER"]
        if not has_credential:
            missing.append("AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (or AZURE_STORAGE_CONNECTION_STRING)")
        problems.append(
            Error(
                f"STORAGE_BACKEND=azure but Azure Blob Storage is partly configured: set {'; '.join(missing)}.",
                id="uploads.E004",
            )
        )
    if settings.STORAGE_OBJECT_ACLS:
        problems.append(
            Error(
                "STORAGE_OBJECT_ACLS is on but Azure Blob Storage has no per-object ACLs: turn it off "
                "(public access is a container setting).",
                id="uploads.E013",
            )
        )
    return problems
