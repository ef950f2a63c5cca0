"""A logging filter that keeps bearer credentials out of every log line."""

from __future__ import annotations

import logging
import re

from django.conf import settings

# Presigned query strings, CKAN API tokens (JWTs) and Authorization headers.
_PATTERNS = [
    re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    re.compile(r"((?:Authorization|X-Signature)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+", re.IGNORECASE),
    # Azure SAS signatures, account keys in connection strings, the Event Grid webhook key.
    re.compile(r"([?&]sig=)[^&\s\"']+"),
    re.compile(r"(AccountKey=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"((?:[?&]key=|X-Webhook-Key[\"']?\s*[:=]\s*[\"']?))[^&\s\"',}]+", re.IGNORECASE),
]


def redact(text: str) -> str:
    """Replace anything that looks like a credential with a marker."""
    for secret in (
        settings.CKAN_API_TOKEN,
        settings.EVENTS_WEBHOOK_SECRET,
        settings.CF_API_TOKEN,
        settings.AZURE_STORAGE_KEY,
        settings.AZURE_EVENTS_WEBHOOK_KEY,
    ):
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrite a record's message with credentials removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True
