"""Who may act on an upload: the CKAN user who started it.

The upload id is public (it is part of every file URL written into CKAN), so part URLs,
``complete``, abort and the detailed status need the requester's own CKAN token. The same token
is recognised without a CKAN call by an HMAC fingerprint kept on the upload; another token of the
same CKAN user is recognised by asking CKAN who it belongs to (cached in Django's cache, which
every process shares: Redis, or a table in the ledger's database; each process also keeps the
answers it saw for a minute).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

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


# A token's user never changes, so this process also keeps the answers it saw for a short while
# in front of the shared cache (a dict read instead of a cache round trip on every issuance).
LOCAL_TTL_SECONDS = 60
LOCAL_MAX_ENTRIES = 1024
_local: dict[str, tuple[float, tuple[str, str]]] = {}


def _remember(key: str, identity: tuple[str, str]) -> None:
    if len(_local) >= LOCAL_MAX_ENTRIES:
        _local.clear()
    _local[key] = (time.monotonic() + LOCAL_TTL_SECONDS, identity)


def forget_local_identities() -> None:
    """Empty this process's copy (tests; the shared cache is cleared separately)."""
    _local.clear()


def whoami(token: str) -> tuple[str, str]:
    """(user name, user id) of a token, from the shared cache or CKAN; raises ``ckan.CkanError``."""
    key = _cache_key(token_fingerprint(token))
    local = _local.get(key)
    if local is not None and local[0] > time.monotonic():
        return local[1]
    try:
        cached = cache.get(key)
    except Exception as exc:  # a cache outage (Redis down) must not stop uploads: ask CKAN instead
        log.warning("identity cache unavailable: %s", type(exc).__name__)
        cached = None
    if isinstance(cached, list | tuple) and len(cached) == 2:
        identity = (str(cached[0]), str(cached[1]))
        _remember(key, identity)
        return identity
    user = ckan.whoami(token=token)
    identity = (str(user.get("name", "")), str(user.get("id", "")))
    if identity[1]:
        _remember(key, identity)
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
