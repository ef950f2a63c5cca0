"""What each target kind's link writes into CKAN, and which uploads share a target.

A resource's file is linked with ``resource_patch`` (url, size, mimetype, format, last_modified,
hash: ``link.ckan_fields``); an organization's or group's image with ``organization_patch`` /
``group_patch`` setting only ``image_url`` (CKAN's patch keeps every other field). "Last writer
wins" holds per target: uploads of the same kind and id are the siblings the link compares.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from uploads import ckan, storage
from uploads.models import TargetKind, Upload

IMAGE_KINDS = (TargetKind.ORGANIZATION, TargetKind.GROUP)


def same_target(kind: str, target_id: str, resource_id: str) -> Q:
    """The uploads that share a target with one of this kind and id (a resource's by resource_id)."""
    if kind == TargetKind.RESOURCE:
        # An image's upload has an empty resource_id, so this is the resource's uploads only,
        # on the resource index as before.
        return Q(resource_id=resource_id)
    return Q(target_kind=kind, target_id=target_id)


def lease_key(kind: str, target_id: str, resource_id: str) -> str:
    """The key of the target's lease (uploads.models.ResourceLease): a resource's id, else ``<kind>:<id>``."""
    if kind == TargetKind.RESOURCE:
        return resource_id
    return f"{kind}:{target_id}"


def target_of(upload_id: Any) -> Q:
    """``same_target`` for the upload with this id (one query)."""
    kind, target_id, resource_id = Upload.objects.values_list("target_kind", "target_id", "resource_id").get(
        pk=upload_id
    )
    return same_target(kind, target_id, resource_id)


def image_fields(upload: Upload) -> dict[str, Any]:
    """What an organization's or group's patch receives: its image, nothing else."""
    return {"image_url": storage.public_url(upload.key)}


def patch(upload: Upload, info: storage.ObjectInfo, *, file_id: str = "") -> None:
    """Write the upload's object into its target in CKAN with the service token (raises ckan.CkanError).

    ``file_id``: the CKAN file registry's id of the object (LINK_STYLE=ckan_files, resources only).
    """
    if upload.target_kind in IMAGE_KINDS:
        ckan.group_patch(upload.target_kind, upload.target_id, image_fields(upload), token=ckan.service_token())
        return
    from uploads.services.link import ckan_fields  # the resource fields live with the link rules

    ckan.resource_patch(upload.resource_id, ckan_fields(upload, info, file_id=file_id), token=ckan.service_token())


def ckan_value(upload: Upload, shown: dict[str, Any]) -> str | None:
    """The URL CKAN holds for this upload's target (``url`` of a resource, ``image_url`` of an image)."""
    return shown.get("image_url") if upload.target_kind in IMAGE_KINDS else shown.get("url")
