"""Who may act on an upload: the CKAN user who started it.

The upload id is public (it is part of every file URL written into CKAN), so part URLs,
``complete``, abort and the detailed status need the requester's own CKAN token. The same token
is recognised without a CKAN call by an HMAC fingerprint kept on the upload; another token of the
same CKAN user is recognised by asking CKAN who it belongs to (cached in Django's cache, so
every process and, with Redis, every machine shares the answer).
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from django.conf import settings
from django.core.cache import cache

from uploads import ckan
from uploads.models import Upload

log = logging.getLogger(__name__)

IDENTITY_TTL_SECONDS = 300


class NotOwner(Exception):
    """The token belongs to another CKAN user than the one who started the upload."""


def token_fingerprint(token: str) -> str:
    """HMAC-SHA256 of a token with the secret key: comparable, not reversible, never the token."""
    return hmac.new(settings.SECRET_KEY.encode("utf-8"), token.encode("utf-8"), hashlib.sha256).hexdigest()


def _cache_key(fingerprint: str) -> str:
    return f"ckanrec:whoami:{fingerprint}"


def whoami(token: str) -> tuple[str, str]:
    """(user name, user id) of a token, from the shared cache or CKAN; raises ``ckan.CkanError``."""
    key = _cache_key(token_fingerprint(token))
    try:
        cached = cache.get(key)
    except Exception as exc:  # a cache outage (Redis down) must not stop uploads: ask CKAN instead
        log.warning("identity cache unavailable: %s", type(exc).__name__)
        cached = None
    if isinstance(cached, list | tuple) and len(cached) == 2:
        return str(cached[0]), str(cached[1])
    user = ckan.whoami(token=token)
    identity = (str(user.get("name", "")), str(user.get("id", "")))
    if identity[1]:
        try:
            cache.set(key, list(identity), IDENTITY_TTL_SECONDS)
        except Exception as exc:
            log.warning("identity cache unavailable: %s", type(exc).__name__)
    return identity


def identify_requester(token: str) -> tuple[str, str]:
    """(user name, user id) for the ledger; a CKAN hiccup records a fingerprint instead of refusing.

    It runs right after CKAN accepted the token for the update, so a failure here is CKAN
    hiccuping, not a bad token.
    """
    try:
        return whoami(token)
    except ckan.CkanError as exc:
        log.warning("could not identify the requester: %s", exc.message)
        return f"token:{token_fingerprint(token)[:12]}", ""


def authorize_owner(upload: Upload, token: str) -> None:
    """Return when ``token`` belongs to the upload's requester; raise NotOwner otherwise.

    CKAN being unreachable while asking raises ``ckan.CkanUnavailable`` (the caller answers 502).
    """
    if upload.token_fingerprint and hmac.compare_digest(upload.token_fingerprint, token_fingerprint(token)):
        return
    if not upload.requested_by_id:
        raise NotOwner
    try:
        _, user_id = whoami(token)
    except (ckan.CkanNotAuthorized, ckan.CkanNotFound):
        # CKAN runs a bad token as anonymous: user_show then has no user to show.
        raise NotOwner from None
    if not user_id or not hmac.compare_digest(user_id, upload.requested_by_id):
        raise NotOwner
