"""Who may read an uploaded file: the rule that keeps a private dataset's files private.

The service links files with a plain public URL (``STORAGE_PUBLIC_BASE_URL`` + key): whoever
has it downloads the file, without CKAN's permission check. So a file may have such a URL
only when its dataset is public, unless the operator has opted in with
``PRIVATE_DATASET_UPLOADS=public``. In the s3filestore link style (``LINK_STYLE``) every
download goes through CKAN's download route, which checks the reader's rights and redirects to
a short-lived signed URL, and in the ckan_files style CKAN's ``/file/download/<id>`` serves
every file after checking that the reader may see its resource: a private dataset's file is
stored private and allowed. See
docs/privacy.md and docs/link-styles.md.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

PUBLIC_READ = "public-read"
PRIVATE = "private"

NOT_HEALABLE_WITHOUT_ACLS = (
    "not healable here: without object ACLs (R2, or STORAGE_OBJECT_ACLS off) one object cannot be made "
    "private while the bucket's public URL serves it. The operator must do one of: make the dataset public "
    "again; delete the object and clear the resource's url in CKAN; or block the key where the bucket is "
    "public (R2: a WAF rule on the custom domain, or turn public access off). See docs/privacy.md."
)


class PrivateDatasetRefused(Exception):
    """The dataset is private and its file would get a URL that works without CKAN's check."""

    def __init__(self, package_id: str) -> None:
        self.package_id = package_id
        super().__init__(
            f"dataset {package_id} is private, and a file uploaded here gets a public bucket URL that anyone "
            "could download without CKAN's permission check; make the dataset public, or set "
            "PRIVATE_DATASET_UPLOADS=public to accept that private datasets' files are public in the bucket"
        )


def is_private(package: dict[str, Any]) -> bool:
    """Whether CKAN hides the dataset from anonymous users: private, or still a draft."""
    return bool(package.get("private")) or package.get("state") == "draft"


def served_through_ckan() -> bool:
    """Whether readers reach the files through CKAN's download routes (s3filestore, ckan_files)."""
    return settings.LINK_STYLE in ("s3filestore", "ckan_files")


def may_be_public(dataset_private: bool) -> bool:
    """Whether a file of a dataset with that privacy may be readable by anyone with its bucket URL."""
    if settings.LINK_STYLE == "ckan_files":
        # CKAN's file route reads the object itself: no reader ever needs the bucket's URL.
        return False
    if served_through_ckan():
        # As ckanext-s3filestore's `acl = auto`: public-read exactly when the dataset is public.
        return not dataset_private
    return not dataset_private or settings.PRIVATE_DATASET_UPLOADS == "public"


def check_issuance(package: dict[str, Any]) -> bool:
    """The dataset's privacy, for the ledger; raise PrivateDatasetRefused when the rule refuses its file."""
    private = is_private(package)
    if not served_through_ckan() and not may_be_public(private):
        raise PrivateDatasetRefused(str(package.get("id") or package.get("name") or ""))
    return private


def upload_acl(dataset_private: bool = False) -> str:
    """The canned ACL bound into an issued PUT; none on stores without object ACLs (R2)."""
    if not settings.STORAGE_OBJECT_ACLS:
        return ""
    # Public style: only files that may be public are issued at all (check_issuance). s3filestore
    # style: a private dataset's file is PUT private, CKAN signs each download of it.
    return PUBLIC_READ if may_be_public(dataset_private) else PRIVATE
