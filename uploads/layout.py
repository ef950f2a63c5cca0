"""Where an upload's object lives in the bucket, and how it is linked to its CKAN resource.

Three link styles (``LINK_STYLE``, docs/link-styles.md):

- ``public``: the service's own layout ``{STORAGE_KEY_PREFIX}{resource id}/{upload id}/{name}``,
  linked with the plain bucket URL ``STORAGE_PUBLIC_BASE_URL`` + key.
- ``s3filestore``: ckanext-s3filestore's layout
  ``{S3FILESTORE_STORAGE_PATH}/resources/{resource id}/{munged name}``, linked as that extension
  links a file uploaded through CKAN's form (``url_type: upload``, the munged name as ``url``),
  so CKAN's download route serves it after CKAN's permission check, through a signed redirect.
- ``ckan_files``: CKAN 2.12's file storages: ``{CKAN_FILES_STORAGE_PATH}/{resource id}/{upload
  id}/{name}`` inside the bucket of the CKAN storage ``CKAN_FILES_STORAGE``, registered with
  ``file_register``, owned by the resource (``file_ownership_transfer``), and linked with CKAN's
  ``/file/download/<file id>``, which checks the reader's right to see the resource.

Every upload has its own key in both styles (the ledger matches events and listings by key). In
the s3filestore layout the key carries no upload id: a second upload of the same file name for
the same resource gets the name with ``-<8 hex of its upload id>`` before the extension, which
CKAN serves like any other uploaded name.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from uploads import storage
from uploads.munge import MAX_FILENAME_TOTAL_LENGTH, munge_filename
from uploads.validation import MAX_KEY_BYTES, InvalidInput, build_key, parse_key

PUBLIC = "public"
S3FILESTORE = "s3filestore"
CKAN_FILES = "ckan_files"
LINK_STYLES = (PUBLIC, S3FILESTORE, CKAN_FILES)


def style() -> str:
    return settings.LINK_STYLE


def is_s3filestore() -> bool:
    return settings.LINK_STYLE == S3FILESTORE


def is_ckan_files() -> bool:
    return settings.LINK_STYLE == CKAN_FILES


def ckan_files_prefix() -> str:
    """The CKAN storage's ``path`` in the bucket, as a key prefix."""
    path = settings.CKAN_FILES_STORAGE_PATH.strip("/")
    return path + "/" if path else ""


def s3filestore_prefix() -> str:
    """``<storage path>/resources/``, joined as the extension joins it (os.path.join)."""
    return posixpath.join(settings.S3FILESTORE_STORAGE_PATH, "resources") + "/"


def listing_prefix() -> str:
    """The part of the bucket this service writes to (what reconcile lists)."""
    if is_s3filestore():
        return s3filestore_prefix()
    if is_ckan_files():
        return ckan_files_prefix()
    return settings.STORAGE_KEY_PREFIX


def storage_location(key: str) -> str:
    """Where a CKAN file storage finds the object at ``key``: the key without the storage's path."""
    prefix = ckan_files_prefix()
    return key[len(prefix) :] if key.startswith(prefix) else key


def _s3filestore_key(resource_id: str, name: str) -> str:
    return posixpath.join(s3filestore_prefix(), munge_filename(resource_id), name)


def _with_suffix(name: str, upload_id: uuid.UUID) -> str:
    stem, ext = posixpath.splitext(name)
    suffix = "-" + upload_id.hex[:8]
    stem = stem[: MAX_FILENAME_TOTAL_LENGTH - len(ext) - len(suffix)]
    return munge_filename(stem + suffix + ext)


def build_upload_key(resource_id: str, upload_id: uuid.UUID, filename: str, *, key_taken: Callable[[str], bool]) -> str:
    """The object key of a new upload; ``key_taken`` tells whether the ledger has a key already."""
    if not is_s3filestore():
        return build_key(listing_prefix(), resource_id, upload_id, filename)
    key = _s3filestore_key(resource_id, munge_filename(filename))
    if key_taken(key):
        key = _s3filestore_key(resource_id, _with_suffix(munge_filename(filename), upload_id))
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidInput("filename", "is too long: the object key would exceed 1024 bytes")
    return key


def upload_ids_by_key(keys: Iterable[str]) -> dict[str, uuid.UUID]:
    """Upload ids of the objects at these keys (one query at most): the keys this service wrote.

    In the public layout the key names its upload; in the s3filestore layout the ledger is asked,
    and a key it does not know is not this service's (CKAN's own uploads share the prefix).
    """
    keys = list(keys)
    if not is_s3filestore():
        ids: dict[str, uuid.UUID] = {}
        for key in keys:
            parsed = parse_key(listing_prefix(), key)
            if parsed is not None:
                ids[key] = parsed[1]
        return ids
    from uploads.models import Upload

    if not keys:
        return {}
    return dict(Upload.objects.filter(key__in=keys).values_list("key", "id"))


def object_name(key: str) -> str:
    """The file name CKAN stores as the resource's ``url`` in the s3filestore style."""
    return posixpath.basename(key)


def ckan_file_url(file_id: str) -> str:
    """CKAN 2.12's download route of a registered file (it checks the reader's access)."""
    return f"{settings.CKAN_URL.rstrip('/')}/file/download/{file_id}"


def link_fields(key: str, *, file_id: str = "") -> dict[str, Any]:
    """The ``url`` (and ``url_type``) fields that link the object at ``key`` to its resource."""
    if is_ckan_files():
        return {"url": ckan_file_url(file_id)}
    if is_s3filestore():
        # CKAN keeps the bare name for url_type "upload" and shows its download route instead;
        # ckanext-s3filestore finds the object again at resources/<id>/<munged basename(url)>.
        return {"url": object_name(key), "url_type": "upload"}
    return {"url": storage.public_url(key)}


def linked_url(key: str, *, package_id: str, resource_id: str, file_id: str = "") -> str:
    """The URL a reader follows to the file: the bucket's, or CKAN's download route."""
    if is_ckan_files():
        return ckan_file_url(file_id)
    if is_s3filestore():
        base = settings.CKAN_URL.rstrip("/")
        return f"{base}/dataset/{package_id}/resource/{resource_id}/download/{object_name(key)}"
    return storage.public_url(key)


def link_differs(key: str, recorded_url: str, resource: dict[str, Any]) -> bool:
    """Whether the resource in CKAN no longer points at the object this upload linked."""
    if is_s3filestore():
        # resource_show shows the download route on CKAN's own site URL (which may differ from
        # the service's CKAN_URL): compare what the extension resolves, the type and the name.
        url = str(resource.get("url") or "")
        return resource.get("url_type") != "upload" or munge_filename(url.rsplit("/", 1)[-1]) != object_name(key)
    return resource.get("url") != (recorded_url or storage.public_url(key))


def content_disposition(key: str, media_type: str, policy_disposition: str) -> str:
    """The Content-Disposition bound into the PUT: the extension's own in the s3filestore style.

    ckanext-s3filestore stores every file but a PDF with ``attachment; filename=<name>`` (and
    signs private downloads with that too), so a file written here is served as its own are.
    """
    if is_s3filestore() and media_type != "application/pdf":
        return "attachment; filename=" + object_name(key)
    return policy_disposition
