"""The client JSON API: validate, call one service, answer. Errors are ``{"error": {...}}``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, field_validator

from uploads import ckan, storage
from uploads.api_events import router as events_router
from uploads.middleware import is_json_media_type
from uploads.models import Upload
from uploads.services import ingest, issue
from uploads.validation import (
    CONTENT_TYPE_PATTERN,
    FILENAME_PATTERN,
    MAX_CONTENT_TYPE_CHARS,
    MAX_FILENAME_CHARS,
    MAX_SINGLE_PUT_BYTES,
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


@api.exception_handler(storage.StorageError)
def _storage_error(request: HttpRequest, exc: storage.StorageError) -> HttpResponse:
    if isinstance(exc, storage.StorageNotConfigured):
        return error_response(request, 503, "storage_not_configured", str(exc))
    log.warning("storage error: %s", exc)
    return error_response(request, 502, "storage_unavailable", "object storage could not be reached")


# --- schemas -----------------------------------------------------------------------------


class FileFields(BaseModel):
    # The same regular expressions, with the same semantics, as the schema and the code.
    model_config = ConfigDict(regex_engine="python-re")

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
        None, ge=1, le=MAX_SINGLE_PUT_BYTES, description="Bytes; when given, the upload must be exactly this size"
    )
    sha256: str | None = Field(
        None, pattern=SHA256_PATTERN, description="Hex SHA-256 of the file; when given, the store verifies it"
    )

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        return _clean(clean_filename, value)

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        return _clean(clean_content_type, value)

    @field_validator("size")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        return _clean(clean_size, value)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str:
        return _clean(clean_sha256, value)


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


class IssuedUploadOut(Schema):
    upload_id: UUID
    upload_url: str
    method: str = "PUT"
    headers: dict[str, str]
    key: str
    expires_at: datetime
    status_url: str


class ResourceCreatedOut(Schema):
    resource: dict[str, Any]
    upload: IssuedUploadOut


class UploadStatusOut(Schema):
    upload_id: UUID
    resource_id: str
    state: str
    issued_at: datetime
    expires_at: datetime
    uploaded_at: datetime | None
    linked_at: datetime | None
    size: int | None
    etag: str
    last_error: str


class CompleteOut(Schema):
    upload_id: UUID
    state: str


class ErrorOut(Schema):
    error: dict[str, Any]


# Every refusal an endpoint can answer, all in the one error shape.
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 413, 415, 502, 503)}
PATH_ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 404)}


def _client_address(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _issued_out(request: HttpRequest, issued: issue.IssuedUpload) -> dict[str, Any]:
    upload = issued.upload
    return {
        "upload_id": upload.id,
        "upload_url": issued.url,
        "method": "PUT",
        "headers": issued.headers,
        "key": upload.key,
        "expires_at": upload.expires_at,
        "status_url": request.build_absolute_uri(reverse("api-v1:upload_status", args=[upload.id])),
    }


# --- endpoints ---------------------------------------------------------------------------


@api.post("/uploads", auth=CkanToken(), response={201: IssuedUploadOut, **ERRORS}, url_name="upload_create")
def create_upload(request: HttpRequest, payload: UploadRequest) -> Status:
    """Issue a presigned PUT URL for a resource the caller may update in CKAN."""
    issued = issue.issue_upload(
        resource_id=payload.resource_id,
        filename=payload.filename,
        content_type=payload.content_type,
        size=payload.size,
        sha256=payload.sha256 or "",
        client_token=request.auth,  # type: ignore[attr-defined]
        client_address=_client_address(request),
    )
    return Status(201, _issued_out(request, issued))


@api.post("/resources", auth=CkanToken(), response={201: ResourceCreatedOut, **ERRORS}, url_name="resource_create")
def create_resource(request: HttpRequest, payload: ResourceRequest) -> Status:
    """Create a CKAN resource with the caller's token, then issue an upload URL for its file."""
    fields = payload.model_dump(exclude={"filename", "content_type", "size", "sha256"}, exclude_none=True)
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
        client_token=request.auth,  # type: ignore[attr-defined]
        client_address=_client_address(request),
    )
    return Status(201, {"resource": resource, "upload": _issued_out(request, issued)})


@api.get("/uploads/{upload_id}", response={200: UploadStatusOut, **PATH_ERRORS}, url_name="upload_status")
def upload_status(request: HttpRequest, upload_id: UUID) -> dict[str, Any]:
    """Where an upload stands. The upload id is an unguessable capability."""
    upload = get_object_or_404(Upload, pk=upload_id)
    return {
        "upload_id": upload.id,
        "resource_id": upload.resource_id,
        "state": upload.state,
        "issued_at": upload.issued_at,
        "expires_at": upload.expires_at,
        "uploaded_at": upload.object_seen_at,
        "linked_at": upload.linked_at,
        "size": upload.object_size,
        "etag": upload.object_etag,
        "last_error": upload.last_error,
    }


@api.post("/uploads/{upload_id}/complete", response={202: CompleteOut, **PATH_ERRORS}, url_name="upload_complete")
def complete_upload(request: HttpRequest, upload_id: UUID) -> Status:
    """The client's hint that its PUT finished: recorded like a storage event, then linked."""
    try:
        ingest.record_client_complete(upload_id=upload_id)
    except Upload.DoesNotExist:
        raise Http404 from None
    state = Upload.objects.values_list("state", flat=True).get(pk=upload_id)
    return Status(202, {"upload_id": upload_id, "state": state})


api.add_router("/events", events_router)
