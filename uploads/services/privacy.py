"""Who may read an uploaded file: the rule that keeps a private dataset's files private.

The service links files with a plain public URL (``STORAGE_PUBLIC_BASE_URL`` + key): whoever
has it downloads the file, without CKAN's permission check. So a file may have such a URL
only when its dataset is public, unless the operator has opted in with
``PRIVATE_DATASET_UPLOADS=public``. See docs/privacy.md.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

PUBLIC_READ = "public-read"

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


def may_be_public(dataset_private: bool) -> bool:
    """Whether a file of a dataset with that privacy may be readable by anyone with its bucket URL."""
    return not dataset_private or settings.PRIVATE_DATASET_UPLOADS == "public"


def check_issuance(package: dict[str, Any]) -> bool:
    """The dataset's privacy, for the ledger; raise PrivateDatasetRefused when the rule refuses its file."""
    private = is_private(package)
    if not may_be_public(private):
        raise PrivateDatasetRefused(str(package.get("id") or package.get("name") or ""))
    return private


def upload_acl() -> str:
    """The canned ACL bound into an issued PUT: public-read when the store has object ACLs, else none."""
    # Only files that may be public are issued at all (check_issuance), so with ACLs it is public-read.
    return PUBLIC_READ if settings.STORAGE_OBJECT_ACLS else ""
