"""Issue presigned upload URLs and record each one in the ledger."""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction
from django.db.models.sql import InsertQuery
from django.utils import timezone

from uploads import ckan, content_policy, layout, storage
from uploads.models import TargetKind, Upload, UploadState
from uploads.services import privacy
from uploads.services.owner import identify_requester, token_fingerprint
from uploads.validation import InvalidInput, PartPlan, build_key, plan_upload

log = logging.getLogger(__name__)

MAX_PART_URLS_PER_CALL = 1000


class UploadConflict(Exception):
    """The upload is not in a state that allows this; ``code`` names why (answered as 409)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class PartUrl:
    part_number: int
    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class IssuedUpload:
    upload: Upload
    url: str
    headers: dict[str, str]
    parts: list[PartUrl] = field(default_factory=list)


def plan_for(size: int | None, multipart: bool | None) -> PartPlan | None:
    """The multipart plan under this deployment's settings (None: a single PUT)."""
    return plan_upload(
        size,
        multipart=multipart,
        threshold=settings.MULTIPART_THRESHOLD,
        preferred_part_size=settings.MULTIPART_PART_SIZE,
        max_size=settings.UPLOAD_MAX_SIZE,
    )


def read_dataset(package_id: str, *, token: str) -> tuple[bool, dict[str, Any]]:
    """The dataset's privacy (refusing when the rule says so) and the dataset as CKAN showed it."""
    package = ckan.package_show(package_id, token=token)
    return privacy.check_issuance(package), package


def names_for_people(resource: dict[str, Any], package: dict[str, Any] | None) -> dict[str, str]:
    """The names stewards think in, from the answers the issuance already has (no extra call).

    Cut to the column lengths: a name is for display, the ids stay the keys.
    """
    package = package or {}
    organization = package.get("organization") if isinstance(package.get("organization"), dict) else {}
    values = {
        "resource_name": resource.get("name"),
        "dataset_name": package.get("name"),
        "dataset_title": package.get("title"),
        "organization_name": (organization or {}).get("name"),
        "organization_title": (organization or {}).get("title"),
    }
    lengths = _name_lengths()
    return {name: str(value or "")[: lengths[name]] for name, value in values.items()}


@functools.cache
def _name_lengths() -> dict[str, int | None]:
    names = {"resource_name", "dataset_name", "dataset_title", "organization_name", "organization_title"}
    return {f.name: getattr(f, "max_length", None) for f in Upload._meta.concrete_fields if f.name in names}


@functools.cache
def _insert_plan(alias: str, vendor: str) -> tuple[str, dict[str, Any]]:
    """The ledger's INSERT of one row (every column), compiled by the ORM once per process and database,
    and the prepared value of each column whose default is a constant (most of a new row's)."""
    query = InsertQuery(Upload)
    query.insert_values(Upload._meta.local_concrete_fields, [Upload()])
    [(sql, _params)] = query.get_compiler(alias).as_sql()
    connection = connections[alias]
    constants = {
        field.attname: field.get_db_prep_save(field.get_default(), connection)
        for field in Upload._meta.local_concrete_fields
        if not callable(field.default) and not getattr(field, "auto_now", False)
    }
    return sql, constants


def _record_upload(*, client_token: str, **fields: Any) -> Upload:
    """INSERT one ledger row, committed when this returns (unless the caller holds a transaction).

    Every row, resource file or image, gets the configured bucket and the fingerprint of the
    requester's token (never the token) here.

    The statement is compiled once (compiling the wide INSERT per request cost more than running
    it); the values given are prepared by each field as ``save()`` would. A single INSERT commits
    on its own in autocommit: BEGIN and COMMIT around it would be two more round trips. Inside a
    caller's transaction a savepoint keeps a refused key from breaking that transaction.
    """
    fields.update(bucket=storage.bucket_name(), token_fingerprint=token_fingerprint(client_token))
    upload = Upload(**fields)
    alias = router.db_for_write(Upload)
    connection = connections[alias]
    sql, constants = _insert_plan(alias, connection.vendor)
    params = [
        constants[field.attname]
        if field.attname not in fields and field.attname in constants
        else field.get_db_prep_save(field.pre_save(upload, True), connection)
        for field in Upload._meta.local_concrete_fields
    ]
    with transaction.atomic(using=alias) if connection.in_atomic_block else contextlib.nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
    upload._state.adding = False
    upload._state.db = alias
    return upload


def issue_upload(
    *,
    resource_id: str,
    filename: str,
    content_type: str,
    size: int | None,
    sha256: str,
    client_token: str,
    client_address: str | None,
    multipart: bool | None = None,
    resource: dict[str, Any] | None = None,
    dataset_private: bool | None = None,
    package: dict[str, Any] | None = None,
) -> IssuedUpload:
    """Check the client may update the resource, record an Upload and sign its URL(s).

    A single PUT gets one presigned URL. A multipart upload (``multipart``, or a size above
    MULTIPART_THRESHOLD) is started in the store and gets the first page of part URLs.
    ``resource`` is given when the caller has just created the resource with the same token,
    which already proves the right to update it; ``dataset_private`` (and ``package``, the
    dataset it read) when it has checked the dataset's privacy already.
    """
    plan = plan_for(size, multipart)
    policy = content_policy.decide(content_type, filename)
    if resource is None:
        resource = ckan.authorize_resource_update(resource_id, token=client_token)
    if dataset_private is None:
        dataset_private, package = read_dataset(str(resource.get("package_id", "")), token=client_token)
    names = names_for_people(resource, package)
    requested_by, requested_by_id = identify_requester(client_token)
    upload_id = uuid.uuid4()
    key = layout.build_upload_key(
        resource_id, upload_id, filename, key_taken=lambda k: Upload.objects.filter(key=k).exists()
    )
    disposition = layout.content_disposition(key, policy.media_type, policy.content_disposition)
    ttl = storage.capped_ttl(settings.UPLOAD_URL_TTL)
    now = timezone.now()
    fields: dict[str, Any] = {}
    url, headers = "", {}
    if plan is None:
        signed = storage.presign_put(
            key,
            content_type=content_type,
            content_length=size,
            sha256_hex=sha256,
            content_disposition=disposition,
            expires_in=ttl,
            acl=privacy.upload_acl(dataset_private),
        )
        url, headers = signed.url, signed.headers
        expires_at = now + timedelta(seconds=signed.expires_in)
    else:
        # A network call, before any transaction: an upload id the ledger never records is an
        # unknown multipart upload, which the reconcile scan reports and aborts.
        fields = {
            "multipart_upload_id": storage.create_multipart_upload(
                key,
                content_type=content_type,
                content_disposition=disposition,
                acl=privacy.upload_acl(dataset_private),
            ),
            "part_size": plan.part_size,
            "part_count": plan.part_count,
        }
        expires_at = now + timedelta(seconds=settings.MULTIPART_MAX_AGE)
    try:
        upload = _record_upload(
            id=upload_id,
            resource_id=resource_id,
            target_id=resource_id,
            package_id=str(resource.get("package_id", "")),
            filename=filename,
            content_type=content_type,
            declared_size=size,
            declared_sha256=sha256,
            key=key,
            requested_by=requested_by,
            requested_by_id=requested_by_id,
            client_token=client_token,
            client_address=client_address,
            issued_at=now,
            expires_at=expires_at,
            **fields,
            **names,
            dataset_private=dataset_private,
        )
    except IntegrityError:
        # Two uploads of one file name for one resource issued at the same instant (s3filestore
        # layout): the other one has the key. Nothing was recorded for this one.
        raise UploadConflict(
            "key_in_use", "another upload of this file name for this resource is being issued: try again"
        ) from None
    parts: list[PartUrl] = []
    if plan is not None:
        first_page = range(1, min(plan.part_count, settings.MULTIPART_URLS_PER_PAGE) + 1)
        parts = sign_parts(upload, list(first_page))
    log.info(
        "issued %s upload %s for resource %s to %s",
        "multipart" if plan else "single-PUT",
        upload.id,
        resource_id,
        requested_by,
    )
    return IssuedUpload(upload=upload, url=url, headers=headers, parts=parts)


# A file name's extension must fit the declared image type (when the type is one of these).
IMAGE_EXTENSIONS = {
    "image/png": {"png"},
    "image/jpeg": {"jpg", "jpeg", "jfif"},
    "image/gif": {"gif"},
    "image/webp": {"webp"},
    "image/avif": {"avif"},
    "image/svg+xml": {"svg", "svgz"},
}


def check_image(filename: str, content_type: str, size: int) -> content_policy.ContentDecision:
    """Refuse what is not an accepted image (IMAGE_ALLOWED_TYPES, IMAGE_MAX_SIZE), then the content policy."""
    media = content_policy.media_type(content_type)
    allowed = settings.IMAGE_ALLOWED_TYPES
    if media not in allowed:
        raise InvalidInput("content_type", f"must be an image of an accepted type ({', '.join(allowed)})")
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    expected = IMAGE_EXTENSIONS.get(media)
    if expected is not None and extension not in expected:
        raise InvalidInput("filename", f"must end in .{' or .'.join(sorted(expected))} for {media}")
    if size > settings.IMAGE_MAX_SIZE:
        raise InvalidInput("size", f"must be at most {settings.IMAGE_MAX_SIZE} bytes (IMAGE_MAX_SIZE)")
    # SVG (and any other active type) also needs UPLOAD_ALLOWED_ACTIVE_TYPES, and is then an attachment.
    return content_policy.decide(content_type, filename)


def issue_image(
    *,
    kind: str,
    target: str,
    filename: str,
    content_type: str,
    size: int,
    sha256: str,
    client_token: str,
    client_address: str | None,
) -> IssuedUpload:
    """Check the client may update the organization or group (``kind``), record an Upload and sign its PUT.

    ``target`` is the organization's or group's id or name; the ledger keeps its id, name and title.
    An image is always a single PUT (IMAGE_MAX_SIZE is far below MULTIPART_THRESHOLD).
    """
    if kind not in (TargetKind.ORGANIZATION, TargetKind.GROUP):
        raise ValueError(f"not an image target kind: {kind}")
    policy = check_image(filename, content_type, size)
    shown = ckan.authorize_group_update(kind, target, token=client_token)
    requested_by, requested_by_id = identify_requester(client_token)
    target_id = str(shown["id"])
    upload_id = uuid.uuid4()
    key = build_key(settings.STORAGE_KEY_PREFIX, target_id, upload_id, filename)
    signed = storage.presign_put(
        key,
        content_type=content_type,
        content_length=size,
        sha256_hex=sha256,
        content_disposition=policy.content_disposition,
        expires_in=storage.capped_ttl(settings.UPLOAD_URL_TTL),
        # An image is shown by browsers from image_url: it is public in every link style.
        acl=privacy.PUBLIC_READ if settings.STORAGE_OBJECT_ACLS else "",
    )
    now = timezone.now()
    names = {
        "target_name": str(shown.get("name") or "")[:100],
        "target_title": str(shown.get("title") or "")[:500],
    }
    if kind == TargetKind.ORGANIZATION:
        # An organization's image counts among that organization's uploads for stewards.
        names.update(organization_name=names["target_name"], organization_title=names["target_title"])
    upload = _record_upload(
        id=upload_id,
        target_kind=kind,
        target_id=target_id,
        resource_id="",
        filename=filename,
        content_type=content_type,
        declared_size=size,
        declared_sha256=sha256,
        key=key,
        requested_by=requested_by,
        requested_by_id=requested_by_id,
        client_token=client_token,
        client_address=client_address,
        issued_at=now,
        expires_at=now + timedelta(seconds=signed.expires_in),
        **names,
    )
    log.info("issued image upload %s for %s %s to %s", upload.id, kind, target_id, requested_by)
    return IssuedUpload(upload=upload, url=signed.url, headers=signed.headers, parts=[])


def upload_plan(upload: Upload) -> PartPlan:
    """The part plan recorded for a multipart upload."""
    if not upload.is_multipart or not upload.part_size or not upload.part_count or upload.declared_size is None:
        raise UploadConflict("not_multipart", "this upload is a single PUT: it has no parts")
    return PartPlan(size=upload.declared_size, part_size=upload.part_size, part_count=upload.part_count)


def require_open_multipart(upload: Upload, *, now: datetime | None = None) -> PartPlan:
    """The plan of a multipart upload that still takes parts, or UploadConflict saying why not."""
    plan = upload_plan(upload)
    if upload.state == UploadState.ABORTED:
        raise UploadConflict("aborted", "this upload was aborted")
    if upload.state not in (UploadState.ISSUED, UploadState.EXPIRED):
        raise UploadConflict("already_completed", f"this upload is {upload.state}: it takes no more parts")
    if upload.state == UploadState.EXPIRED or upload.expires_at <= (now or timezone.now()):
        raise UploadConflict("expired", "this multipart upload was abandoned past MULTIPART_MAX_AGE")
    return plan


def sign_parts(upload: Upload, part_numbers: Sequence[int]) -> list[PartUrl]:
    """Fresh presigned URLs for some parts of an open multipart upload (each bound to its number and length)."""
    plan = require_open_multipart(upload)
    numbers = sorted(set(part_numbers))
    if not numbers:
        raise InvalidInput("part_numbers", "must name at least one part")
    if len(numbers) > MAX_PART_URLS_PER_CALL:
        raise InvalidInput("part_numbers", f"must name at most {MAX_PART_URLS_PER_CALL} parts per call")
    lengths = {n: plan.part_length(n) for n in numbers}
    # A part URL lives the usual URL TTL, but never beyond the multipart upload's own deadline.
    remaining = int((upload.expires_at - timezone.now()).total_seconds())
    ttl = storage.capped_ttl(min(settings.UPLOAD_URL_TTL, max(1, remaining)))
    signed_at = timezone.now()
    out = []
    for number in numbers:
        signed = storage.presign_upload_part(
            upload.key,
            upload_id=upload.multipart_upload_id,
            part_number=number,
            content_length=lengths[number],
            expires_in=ttl,
        )
        out.append(
            PartUrl(
                part_number=number,
                url=signed.url,
                headers=signed.headers,
                expires_at=signed_at + timedelta(seconds=signed.expires_in),
            )
        )
    return out


def uploaded_parts(upload: Upload) -> list[storage.PartInfo]:
    """The parts the bucket already holds for an open multipart upload (for a client resuming)."""
    require_open_multipart(upload)
    try:
        return storage.list_parts(upload.key, upload_id=upload.multipart_upload_id)
    except storage.MultipartUploadGone:
        raise UploadConflict("upload_gone", "the store no longer knows this multipart upload") from None


def create_resource_and_issue(
    *,
    fields: dict[str, Any],
    filename: str,
    content_type: str,
    size: int | None,
    sha256: str,
    client_token: str,
    client_address: str | None,
    multipart: bool | None = None,
) -> tuple[dict[str, Any], IssuedUpload]:
    """Create a CKAN resource with the client's token, then issue an upload URL for it."""
    # Refuse what would be refused anyway before CKAN gets a resource that would never have a file.
    plan_for(size, multipart)
    content_policy.decide(content_type, filename)
    # Before creating anything: a refused file must not leave an empty resource behind.
    private, package = read_dataset(str(fields.get("package_id", "")), token=client_token)
    resource = ckan.resource_create(fields, token=client_token)
    issued = issue_upload(
        resource_id=str(resource["id"]),
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=sha256,
        client_token=client_token,
        client_address=client_address,
        multipart=multipart,
        resource=resource,
        dataset_private=private,
        package=package,
    )
    return resource, issued
