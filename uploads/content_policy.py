"""What a public bucket may serve: the policy for declared content types (pure, no I/O).

The bucket serves each object under its own public domain with the Content-Type signed at
issuance. A type a browser renders or runs there (HTML, SVG, XML, JavaScript) is stored XSS on
the data portal's file domain, and an executable is malware hosting; so these *active* types
are refused unless the operator allows them, and then they are stored with
``Content-Disposition: attachment`` so that browsers download them instead of rendering them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from django.conf import settings

from uploads.validation import InvalidInput

ATTACHMENT = "attachment"

# Types a browser renders as a document or runs as script, types it sniffs into one, and
# executables. Any "+xml" type is rendered as XML too (and XML may carry XHTML script).
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/javascript",
        "text/ecmascript",
        "application/wasm",
        "application/x-shockwave-flash",
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-dosexec",
        "application/x-ms-installer",
        "application/x-msi",
        "application/vnd.microsoft.portable-executable",
        "application/x-executable",
        "application/x-sh",
        "application/hta",
        "unknown/unknown",
        "application/unknown",
    }
)

# File extensions that make a file active whatever type is declared (a URL ending in .html
# or .exe invites a browser, a proxy or a person to treat it as one), with the type they mean.
ACTIVE_EXTENSIONS = {
    "html": "text/html",
    "htm": "text/html",
    "shtml": "text/html",
    "xhtml": "application/xhtml+xml",
    "xht": "application/xhtml+xml",
    "svg": "image/svg+xml",
    "svgz": "image/svg+xml",
    "xml": "application/xml",
    "xsl": "text/xsl",
    "xslt": "text/xsl",
    "js": "text/javascript",
    "mjs": "text/javascript",
    "wasm": "application/wasm",
    "swf": "application/x-shockwave-flash",
    "exe": "application/x-msdownload",
    "dll": "application/x-msdownload",
    "com": "application/x-msdownload",
    "scr": "application/x-msdownload",
    "bat": "application/x-msdos-program",
    "cmd": "application/x-msdos-program",
    "msi": "application/x-msi",
    "hta": "application/hta",
    "sh": "application/x-sh",
}

# CKAN's `format` for a type when the file name has no usable extension: names, never MIMEs.
KNOWN_FORMATS = {
    "text/csv": "CSV",
    "text/tab-separated-values": "TSV",
    "text/plain": "TXT",
    "application/json": "JSON",
    "application/geo+json": "GeoJSON",
    "application/ld+json": "JSON-LD",
    "application/x-ndjson": "NDJSON",
    "application/xml": "XML",
    "text/xml": "XML",
    "text/html": "HTML",
    "application/pdf": "PDF",
    "application/zip": "ZIP",
    "application/gzip": "GZ",
    "application/vnd.ms-excel": "XLS",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "XLSX",
    "application/vnd.oasis.opendocument.spreadsheet": "ODS",
    "application/msword": "DOC",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "DOCX",
    "application/vnd.apache.parquet": "PARQUET",
    "application/vnd.google-earth.kml+xml": "KML",
    "application/rdf+xml": "RDF",
    "text/turtle": "TTL",
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/tiff": "TIFF",
    "image/svg+xml": "SVG",
}

_FORMAT_EXTENSION = re.compile(r"^[A-Za-z0-9]{1,10}$")


@dataclass(frozen=True)
class ContentDecision:
    """How a declared file may be stored: ``content_disposition`` is bound into the signed PUT."""

    media_type: str
    active: bool
    content_disposition: str = ""


def media_type(content_type: str) -> str:
    """``text/csv; charset=utf-8`` → ``text/csv``."""
    return content_type.split(";", 1)[0].strip().lower()


def is_active_type(media: str) -> bool:
    """True for a type a browser renders or runs, or an executable."""
    return media in ACTIVE_TYPES or media.endswith("+xml")


def _extension(filename: str) -> str:
    _, dot, extension = filename.rpartition(".")
    return extension.lower() if dot else ""


def decide(content_type: str, filename: str, *, allowed_active: Collection[str] | None = None) -> ContentDecision:
    """Accept a declared file as passive, accept an operator-allowed active one as an attachment, or refuse it.

    ``allowed_active`` (default: settings.UPLOAD_ALLOWED_ACTIVE_TYPES) lists the active types
    the operator accepts; raises InvalidInput naming ``content_type`` or ``filename`` otherwise.
    """
    if allowed_active is None:
        allowed_active = settings.UPLOAD_ALLOWED_ACTIVE_TYPES
    allowed = {item.lower() for item in allowed_active}
    media = media_type(content_type)
    if is_active_type(media):
        if media not in allowed:
            raise InvalidInput(
                "content_type",
                f"{media} is active content that the public bucket would serve to browsers; "
                "it is not accepted here (ask the operator, or upload it as application/octet-stream in an archive)",
            )
        return ContentDecision(media_type=media, active=True, content_disposition=ATTACHMENT)
    extension = _extension(filename)
    implied = ACTIVE_EXTENSIONS.get(extension)
    if implied is not None:
        if implied not in allowed:
            raise InvalidInput(
                "filename",
                f"the extension .{extension} marks active content ({implied}); it is not accepted here",
            )
        return ContentDecision(media_type=media, active=True, content_disposition=ATTACHMENT)
    return ContentDecision(media_type=media, active=False)


def ckan_format(content_type: str, filename: str) -> str:
    """CKAN's `format`: the file's extension (the linked URL ends in it), else a known name for the type, else ""."""
    extension = filename.rpartition(".")[2] if "." in filename else ""
    if _FORMAT_EXTENSION.match(extension):
        return extension.upper()
    return KNOWN_FORMATS.get(media_type(content_type), "")
