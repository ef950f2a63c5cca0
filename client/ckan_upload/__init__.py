"""A client for the CKAN Upload Reconciler: single or multipart uploads, parallel parts, resume."""

from __future__ import annotations

__version__ = "0.1.0"
