"""The client JSON API: validate, call one service, answer. Errors are ``{"error": {...}}``."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import get_script_prefix, reverse
from ninja import NinjaAPI, Path, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from uploads import ckan, storage
from uploads.api_events import router as events_router
from uploads.middleware import is_json_media_type
from uploads.models import TargetKind, Upload
from uploads.services import complete, issue, privacy
from uploads.services.issue import UploadConflict
from uploads.services.owner import NotOwner, authorize_owner
from uploads.validation import (
    CONTENT_TYPE_PATTERN,
    FILENAME_PATTERN,
    MAX_CONTENT_TYPE_CHARS,
    MAX_DECLARED_SIZE,
    MAX_FILENAME_CHARS,
    RESOURCE_ID_PATTERN,
    SHA256_PATTERN,
    InvalidInput,
    clean_content_type,
    clean_filename,
    clean_resource_id,
    clean_sha256,
    clean_size,
)

log = logging.getLogger(__name__)


class UnsupportedMediaType(Exception):
    """A body declared as something other than JSON: refused, not parsed."""


class JsonOnlyParser(Parser):
    """Parse a body only when it is declared as JSON."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        if not is_json_media_type(request.content_type or ""):
            raise UnsupportedMediaType(request.content_type or "")
        return super().parse_body(request)


api = NinjaAPI(
    title="CKAN Upload Reconciler API",
    version="1",
    description="Presigned uploads of CKAN resource files into R2/S3, and their status.",
    urls_namespace="api-v1",
    docs_url="/docs",
    parser=JsonOnlyParser(),
)


class CkanToken(APIKeyHeader):
    """The client's own CKAN API token, sent raw in ``Authorization`` as CKAN expects."""

    param_name = "Authorization"

    def authenticate(self, request: HttpRequest, key: str | None) -> str | None:
        token = (key or "").strip()
        return token or None


# --- errors ------------------------------------------------------------------------------


def error_response(request: HttpRequest, status: int, code: str, message: str, **extra: Any) -> HttpResponse:
    """The one shape of every error this API answers."""
    return api.create_response(request, {"error": {"code": code, "message": message, **extra}}, status=status)


@api.exception_handler(InvalidInput)
def _invalid_input(request: HttpRequest, exc: InvalidInput) -> HttpResponse:
    return error_response(request, 400, "invalid", f"{exc.field} {exc.message}", fields={exc.field: [exc.message]})


@api.exception_handler(NinjaValidationError)
def _invalid_body(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    fields: dict[str, list[str]] = {}
    for item in exc.errors:
        loc = [str(part) for part in item.get("loc", []) if part not in ("body", "payload", "query", "path")]
        message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
        fields.setdefault(".".join(loc) or "body", []).append(message)
    summary = "; ".join(f"{name}: {', '.join(msgs)}" for name, msgs in fields.items())
    return error_response(request, 400, "invalid", summary or "the request body is invalid", fields=fields)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(request, 401, "unauthenticated", "send your CKAN API token in the Authorization header")


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", "no such upload")


@api.exception_handler(NotOwner)
def _not_owner(request: HttpRequest, exc: NotOwner) -> HttpResponse:
    return error_response(
        request, 403, "not_owner", "this upload was started by another CKAN user: use that user's token"
    )


@api.exception_handler(UploadConflict)
def _conflict(request: HttpRequest, exc: UploadConflict) -> HttpResponse:
    return error_response(request, 409, exc.code, exc.message, **exc.details)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # django-ninja wraps every parser failure into a 400 "Cannot parse request body".
    if isinstance(exc.__cause__, UnsupportedMediaType):
        return error_response(
            request, 415, "unsupported_media_type", "send the body as application/json (Content-Type)"
        )
    if exc.status_code == 400 and exc.__cause__ is not None:
        return error_response(request, 400, "unreadable", "the body is not valid JSON")
    return error_response(request, exc.status_code, "http_error", str(exc))


@api.exception_handler(ckan.CkanError)
def _ckan_error(request: HttpRequest, exc: ckan.CkanError) -> HttpResponse:
    if isinstance(exc, ckan.CkanNotAuthorized):
        return error_response(request, 403, "forbidden", f"CKAN refused: {exc.message}")
    if isinstance(exc, ckan.CkanNotFound):
        return error_response(request, 404, "not_found", f"CKAN: {exc.message}")
    if isinstance(exc, ckan.CkanValidationError):
        return error_response(
            request, 400, "ckan_validation", f"CKAN rejected the values: {exc.message}", fields=exc.details
        )
    if isinstance(exc, ckan.CkanNotConfigured):
        return error_response(request, 503, "ckan_not_configured", "CKAN_URL is not configured")
    if isinstance(exc, ckan.CkanBadRequest):
        return error_response(request, 502, "ckan_error", f"CKAN answered {exc.status}: {exc.message}")
    log.warning("CKAN unavailable: %s", exc.message)
    return error_response(request, 502, "ckan_unavailable", "CKAN could not be reached; try again later")


@api.exception_handler(privacy.PrivateDatasetRefused)
def _private_dataset(request: HttpRequest, exc: privacy.PrivateDatasetRefused) -> HttpResponse:
    return error_response(request, 409, "private_dataset", str(exc))


@api.exception_handler(storage.StorageError)
def _storage_error(request: HttpRequest, exc: storage.StorageError) -> HttpResponse:
    if isinstance(exc, storage.StorageNotConfigured):
        return error_response(request, 503, "storage_not_configured", str(exc))
    if isinstance(exc, storage.MultipartUploadGone):
        return error_response(request, 409, "upload_gone", "the store no longer knows this multipart upload")
    log.warning("storage error: %s", exc)
    return error_response(request, 502, "storage_unavailable", "object storage could not be reached")


# --- schemas -----------------------------------------------------------------------------


class CleanedFile(BaseModel):
    """A file's name, type, size and hash, each run through the validation module's check.

    The same regular expressions, with the same semantics, as the schema and the code.
    """

    model_config = ConfigDict(regex_engine="python-re")

    @field_validator("filename", check_fields=False)
    @classmethod
    def _filename(cls, value: str) -> str:
        return _clean(clean_filename, value)

    @field_validator("content_type", check_fields=False)
    @classmethod
    def _content_type(cls, value: str) -> str:
        return _clean(clean_content_type, value)

    @field_validator("size", check_fields=False)
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        return _clean(clean_size, value)

    @field_validator("sha256", check_fields=False)
    @classmethod
    def _sha256(cls, value: str | None) -> str:
        return _clean(clean_sha256, value)


class FileFields(CleanedFile):
    filename: str = Field(
        max_length=MAX_FILENAME_CHARS,
        pattern=FILENAME_PATTERN,
        description="The file's name: no path parts or control characters, not only dots. "
        "An active extension (.html, .svg, .js, .exe, ...) is refused unless the operator allows its type.",
        examples=["data.csv"],
    )
    content_type: str = Field(
        max_length=MAX_CONTENT_TYPE_CHARS,
        pattern=CONTENT_TYPE_PATTERN,
        description="The MIME type the bucket will serve. Active types (HTML, XHTML, SVG, XML, JavaScript, "
        "executables) are refused with 400 unless the operator allows them; allowed ones are stored "
        "with Content-Disposition: attachment, which is then one of the returned headers.",
        examples=["text/csv"],
    )
    size: int | None = Field(
        None,
        ge=1,
        le=MAX_DECLARED_SIZE,
        description="Bytes; when given, the upload must be exactly this size. Above 5 GiB (or above "
        "MULTIPART_THRESHOLD) it is a multipart upload; UPLOAD_MAX_SIZE (5 TiB) at most",
    )
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="Hex SHA-256 of the file: the store verifies it for a single PUT; multipart only records it",
    )
    multipart: bool | None = Field(
        None,
        description="Force (true) or refuse (false) multipart; by default sizes above MULTIPART_THRESHOLD are",
    )


def _clean(func: Any, value: Any) -> Any:
    try:
        return func(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class UploadRequest(FileFields):
    resource_id: str = Field(
        pattern=RESOURCE_ID_PATTERN,
        description="The CKAN resource (UUID) the file belongs to",
        examples=["3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"],
    )

    @field_validator("resource_id")
    @classmethod
    def _resource_id(cls, value: str) -> str:
        return _clean(clean_resource_id, value)


class ResourceRequest(FileFields):
    """A new CKAN resource plus its file; other CKAN resource fields pass through."""

    model_config = ConfigDict(extra="allow")
    package_id: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=1000)


class ImageRequest(CleanedFile):
    """An organization's or group's image: an image type only, at most IMAGE_MAX_SIZE bytes, one PUT."""

    filename: str = Field(
        max_length=MAX_FILENAME_CHARS,
        pattern=FILENAME_PATTERN,
        description="The image's file name; its extension must fit the type (.png for image/png, ...)",
        examples=["logo.png"],
    )
    content_type: str = Field(
        max_length=MAX_CONTENT_TYPE_CHARS,
        pattern=CONTENT_TYPE_PATTERN,
        description="One of IMAGE_ALLOWED_TYPES (default image/png, image/jpeg, image/gif, image/webp; "
        "SVG is refused unless the operator allows it)",
        examples=["image/png"],
    )
    size: int = Field(ge=1, le=MAX_DECLARED_SIZE, description="Bytes, exactly; at most IMAGE_MAX_SIZE (5 MiB)")
    sha256: str | None = Field(
        None, pattern=SHA256_PATTERN, description="Hex SHA-256 of the file (verified by the store)"
    )


class PartUrlOut(Schema):
    part_number: int
    url: str
    headers: dict[str, str]
    expires_at: datetime


class IssuedUploadOut(Schema):
    upload_id: UUID
    method: str = Field(description="PUT (one request to upload_url) or MULTIPART (one PUT per part)")
    upload_url: str | None
    headers: dict[str, str]
    key: str
    expires_at: datetime = Field(description="When the URL (single PUT) or the multipart upload expires")
    status_url: str
    complete_url: str
    multipart: bool
    part_size: int | None = Field(description="Bytes in every part but the last")
    part_count: int | None
    parts: list[PartUrlOut] = Field(description="Presigned URLs for the first parts; more from parts_url")
    parts_url: str | None


class ResourceCreatedOut(Schema):
    resource: dict[str, Any]
    upload: IssuedUploadOut


class UploadStateOut(Schema):
    upload_id: UUID
    state: str


class UploadStatusOut(Schema):
    upload_id: UUID
    state: str
    target_kind: str | None = Field(None, description="resource, organization or group")
    target_id: str | None = None
    resource_id: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    uploaded_at: datetime | None = None
    linked_at: datetime | None = None
    linked_url: str | None = None
    size: int | None = None
    etag: str | None = None
    last_error: str | None = None
    multipart: bool | None = None
    part_size: int | None = None
    part_count: int | None = None
    declared_sha256: str | None = None
    verified_sha256: str | None = None


class PartNumbersIn(Schema):
    part_numbers: list[int] = Field(min_length=1, max_length=issue.MAX_PART_URLS_PER_CALL)


class PartUrlsOut(Schema):
    parts: list[PartUrlOut]


class StoredPartOut(Schema):
    part_number: int
    size: int
    etag: str


class StoredPartsOut(Schema):
    part_size: int
    part_count: int
    parts: list[StoredPartOut]


class CompletedPartIn(Schema):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=200)


class CompleteIn(Schema):
    parts: list[CompletedPartIn] | None = Field(
        None, max_length=10_000, description="The ETags the client got for its parts (checked against the bucket)"
    )


class ErrorOut(Schema):
    error: dict[str, Any]


# Every refusal an endpoint can answer, all in the one error shape.
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 415, 502, 503)}
PATH_ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 404)}
OWNER_ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 415, 502, 503)}


def _client_address(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


_ANY_ID = UUID(int=0)


@functools.lru_cache(maxsize=64)
def _path_template(name: str, script_prefix: str) -> str:
    # reverse() resolves the whole URLconf each call; an upload's paths differ only by its id.
    return reverse(f"api-v1:{name}", args=[_ANY_ID])


def _url(request: HttpRequest, name: str, upload_id: UUID) -> str:
    path = _path_template(name, get_script_prefix()).replace(str(_ANY_ID), str(upload_id))
    return request.build_absolute_uri(path)


def _part_out(part: issue.PartUrl) -> dict[str, Any]:
    return {"part_number": part.part_number, "url": part.url, "headers": part.headers, "expires_at": part.expires_at}


def _issued_out(request: HttpRequest, issued: issue.IssuedUpload) -> dict[str, Any]:
    upload = issued.upload
    multipart = upload.is_multipart
    return {
        "upload_id": upload.id,
        "method": "MULTIPART" if multipart else "PUT",
        "upload_url": None if multipart else issued.url,
        "headers": issued.headers,
        "key": upload.key,
        "expires_at": upload.expires_at,
        "status_url": _url(request, "upload_status", upload.id),
        "complete_url": _url(request, "upload_complete", upload.id),
        "multipart": multipart,
        "part_size": upload.part_size,
        "part_count": upload.part_count,
        "parts": [_part_out(p) for p in issued.parts],
        "parts_url": _url(request, "upload_parts", upload.id) if multipart else None,
    }


def _optional_body(request: HttpRequest, schema: type[Schema]) -> Any:
    """A JSON body validated by ``schema``, or None when the request has no body (or an empty form)."""
    if not request.body.strip():
        return None
    media = (request.content_type or "").lower()
    if media != "application/json" and not media.endswith("+json"):
        if media in ("multipart/form-data", "application/x-www-form-urlencoded") and not (
            request.POST or request.FILES
        ):
            return None
        raise HttpError(415, "send the body as application/json")
    try:
        return schema.model_validate_json(request.body)
    except PydanticValidationError as exc:
        raise NinjaValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def _upload(upload_id: UUID) -> Upload:
    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None:
        raise Http404
    return upload


def _owned_upload(request: HttpRequest, upload_id: UUID) -> Upload:
    """The upload, when the request's token belongs to the CKAN user who started it (else 403)."""
    upload = _upload(upload_id)
    authorize_owner(upload, request.auth)  # type: ignore[attr-defined]
    return upload


def _may_see_details(request: HttpRequest, upload: Upload) -> bool:
    """The owner's token, or a staff session allowed to view the ledger; another token is refused."""
    token = (request.headers.get("Authorization") or "").strip()
    if token:
        authorize_owner(upload, token)
        return True
    user = getattr(request, "user", None)
    return bool(user and user.is_authenticated and user.is_staff and user.has_perm("uploads.view_upload"))


# --- endpoints ---------------------------------------------------------------------------


@api.post("/uploads", auth=CkanToken(), response={201: IssuedUploadOut, **ERRORS}, url_name="upload_create")
def create_upload(request: HttpRequest, payload: UploadRequest) -> Status:
    """Issue a presigned PUT URL (or, for a large file, a multipart upload) for a resource the caller may update."""
    issued = issue.issue_upload(
        resource_id=payload.resource_id,
        filename=payload.filename,
        content_type=payload.content_type,
        size=payload.size,
        sha256=payload.sha256 or "",
        multipart=payload.multipart,
        client_token=request.auth,  # type: ignore[attr-defined]
        client_address=_client_address(request),
    )
    return Status(201, _issued_out(request, issued))


@api.post("/resources", auth=CkanToken(), response={201: ResourceCreatedOut, **ERRORS}, url_name="resource_create")
def create_resource(request: HttpRequest, payload: ResourceRequest) -> Status:
    """Create a CKAN resource with the caller's token, then issue an upload for its file."""
    fields = payload.model_dump(exclude={"filename", "content_type", "size", "sha256", "multipart"}, exclude_none=True)
    for forbidden in ("id", "url_type", "upload"):
        if forbidden in fields:
            raise InvalidInput(forbidden, "cannot be set here")
    fields.setdefault("url", "")
    fields.setdefault("mimetype", payload.content_type)
    resource, issued = issue.create_resource_and_issue(
        fields=fields,
        filename=payload.filename,
        content_type=payload.content_type,
        size=payload.size,
        sha256=payload.sha256 or "",
        multipart=payload.multipart,
        client_token=request.auth,  # type: ignore[attr-defined]
        client_address=_client_address(request),
    )
    return Status(201, {"resource": resource, "upload": _issued_out(request, issued)})


# A CKAN organization or group: its id (a UUID) or its name (2-100 of a-z, 0-9, - and _).
GROUP_REF_PATTERN = r"^[A-Za-z0-9_-]{2,100}$"


def _issue_image(request: HttpRequest, kind: str, target: str, payload: ImageRequest) -> Status:
    issued = issue.issue_image(
        kind=kind,
        target=target,
        filename=payload.filename,
        content_type=payload.content_type,
        size=payload.size,
        sha256=payload.sha256 or "",
        client_token=request.auth,  # type: ignore[attr-defined]
        client_address=_client_address(request),
    )
    return Status(201, _issued_out(request, issued))


@api.post(
    "/organizations/{target}/image",
    auth=CkanToken(),
    response={201: IssuedUploadOut, **ERRORS},
    url_name="organization_image",
)
def organization_image(
    request: HttpRequest, payload: ImageRequest, target: str = Path(..., pattern=GROUP_REF_PATTERN)
) -> Status:
    """Issue a presigned PUT URL for an organization's image; once linked it is the organization's image_url.

    Only a CKAN user who may update the organization (a sysadmin or one of its admins) gets one.
    """
    return _issue_image(request, TargetKind.ORGANIZATION, target, payload)


@api.post("/groups/{target}/image", auth=CkanToken(), response={201: IssuedUploadOut, **ERRORS}, url_name="group_image")
def group_image(
    request: HttpRequest, payload: ImageRequest, target: str = Path(..., pattern=GROUP_REF_PATTERN)
) -> Status:
    """Issue a presigned PUT URL for a group's image; once linked it is the group's image_url.

    Only a CKAN user who may update the group (a sysadmin or one of its admins) gets one.
    """
    return _issue_image(request, TargetKind.GROUP, target, payload)


@api.get(
    "/uploads/{upload_id}",
    response={200: UploadStatusOut, **PATH_ERRORS, **{code: ErrorOut for code in (403, 502)}},
    url_name="upload_status",
    exclude_unset=True,
)
def upload_status(request: HttpRequest, upload_id: UUID) -> dict[str, Any]:
    """Where an upload stands: the state for anyone; the details for its owner's token or a steward."""
    upload = _upload(upload_id)
    if not _may_see_details(request, upload):
        return {"upload_id": upload.id, "state": upload.state}
    return {
        "upload_id": upload.id,
        "state": upload.state,
        "target_kind": upload.target_kind,
        "target_id": upload.target_id or upload.resource_id,
        "resource_id": upload.resource_id,
        "issued_at": upload.issued_at,
        "expires_at": upload.expires_at,
        "uploaded_at": upload.object_seen_at,
        "linked_at": upload.linked_at,
        "linked_url": upload.linked_url,
        "size": upload.object_size,
        "etag": upload.object_etag,
        "last_error": upload.last_error,
        "multipart": upload.is_multipart,
        "part_size": upload.part_size,
        "part_count": upload.part_count,
        "declared_sha256": upload.declared_sha256,
        "verified_sha256": upload.verified_sha256,
    }


@api.post(
    "/uploads/{upload_id}/parts",
    auth=CkanToken(),
    response={200: PartUrlsOut, **OWNER_ERRORS},
    url_name="upload_parts",
)
def sign_parts(request: HttpRequest, upload_id: UUID, payload: PartNumbersIn) -> dict[str, Any]:
    """Fresh presigned URLs for parts of a multipart upload (after they expired, or to resume)."""
    upload = _owned_upload(request, upload_id)
    return {"parts": [_part_out(p) for p in issue.sign_parts(upload, payload.part_numbers)]}


@api.get(
    "/uploads/{upload_id}/parts",
    auth=CkanToken(),
    response={200: StoredPartsOut, **OWNER_ERRORS},
    url_name="upload_parts_list",
)
def list_parts(request: HttpRequest, upload_id: UUID) -> dict[str, Any]:
    """The parts the bucket already holds, so a client resumes without sending them again."""
    upload = _owned_upload(request, upload_id)
    parts = issue.uploaded_parts(upload)
    return {
        "part_size": upload.part_size,
        "part_count": upload.part_count,
        "parts": [{"part_number": p.part_number, "size": p.size, "etag": p.etag} for p in parts],
    }


@api.post(
    "/uploads/{upload_id}/complete",
    auth=CkanToken(),
    response={202: UploadStateOut, **OWNER_ERRORS},
    url_name="upload_complete",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": CompleteIn.model_json_schema()}},
        }
    },
)
def complete_upload(request: HttpRequest, upload_id: UUID) -> Status:
    """Say "I am done; check now": confirms the object (completing a multipart upload) and links it at once.

    The body is optional (a bare POST is fine); ``{"parts": [...]}`` has the service check the
    client's ETags against the bucket's.
    """
    upload = _owned_upload(request, upload_id)
    payload = _optional_body(request, CompleteIn)
    claimed = (
        [complete.ClientPart(part_number=p.part_number, etag=p.etag) for p in payload.parts]
        if payload is not None and payload.parts
        else None
    )
    state = complete.complete_upload(upload=upload, parts=claimed)
    return Status(202, {"upload_id": upload_id, "state": state})


@api.delete(
    "/uploads/{upload_id}",
    auth=CkanToken(),
    response={200: UploadStateOut, **OWNER_ERRORS},
    url_name="upload_abort",
)
def abort_upload(request: HttpRequest, upload_id: UUID) -> dict[str, Any]:
    """Abort an unfinished upload: its parts are deleted in the bucket."""
    upload = _owned_upload(request, upload_id)
    return {"upload_id": upload.id, "state": complete.abort_upload(upload_id=upload.id)}


api.add_router("/events", events_router)
