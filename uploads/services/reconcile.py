"""Reconciliation: compare the bucket listing, the ledger and CKAN; record and heal what differs.

Memory stays flat whatever the bucket size: the listing is read one page at a time, each page
is matched against the ledger with one query, and the ids seen are written to the database
(ReconcileSeen) instead of a Python set, so the second pass over the ledger (expired
URLs, phantoms, drift) can ask "was this listed?" without holding the listing. See
docs/reconcile.md for the rules and the trade-offs.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from uploads import ckan, layout, storage
from uploads.models import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyState,
    LinkOutcome,
    LinkTrigger,
    ReconcileRun,
    ReconcileSeen,
    RunState,
    TargetKind,
    Upload,
    UploadState,
)
from uploads.services import ingest, link, privacy, sweep

log = logging.getLogger(__name__)

LISTING_PAGE_SIZE = 1000
LEDGER_CHUNK_SIZE = 1000
# How often (in listing pages) the run row is saved, so the admin shows a scan in progress.
SAVE_EVERY_PAGES = 50
# What the phantom and drift checks read of a linked upload (loading whole rows costs twice as much).
_LINKED_FIELDS = (
    "id",
    "key",
    "resource_id",
    "package_id",
    "issued_at",
    "object_size",
    "object_last_modified",
    "linked_url",
    "dataset_private",
    "target_kind",
    "target_id",
)

Progress = Callable[[str, int], None]


@dataclass
class Finding:
    """One thing the scan found, before it is recorded as a Discrepancy."""

    kind: str
    key: str
    upload_id: uuid.UUID | None = None
    object_size: int | None = None
    object_last_modified: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        # Keys are unique per issued URL, so kind + key names a finding across runs.
        return hashlib.sha256(f"{self.kind}:{self.key}".encode()).hexdigest()


@dataclass
class Recorded:
    """A finding as it stands in the database after recording: its row and whether it is new."""

    finding: Finding
    discrepancy_id: int | None
    state: str
    new: bool


def _keyset(queryset: QuerySet[Upload], field: str) -> Iterator[list[Upload]]:
    """Walk a queryset in chunks by keyset pagination on an indexed unique ``field``.

    Each chunk is a complete query, so no cursor stays open while heals write to the same table
    (SQLite leaves such reads undefined) and memory holds one chunk at a time.
    """
    page = queryset.order_by(field)
    while True:
        chunk = list(page[:LEDGER_CHUNK_SIZE])
        if chunk:
            yield chunk
        if len(chunk) < LEDGER_CHUNK_SIZE:
            return
        page = queryset.order_by(field).filter(**{f"{field}__gt": getattr(chunk[-1], field)})


def _distinct_keyset(queryset: QuerySet[Upload], field: str) -> Iterator[list[str]]:
    """The distinct values of an indexed ``field``, in chunks (keyset pagination, like ``_keyset``)."""
    values = queryset.order_by(field).values_list(field, flat=True).distinct()
    page = values
    while True:
        chunk = list(page[:LEDGER_CHUNK_SIZE])
        if chunk:
            yield chunk
        if len(chunk) < LEDGER_CHUNK_SIZE:
            return
        page = values.filter(**{f"{field}__gt": chunk[-1]})


def _of_dataset(prefix: str, package_id: str) -> list[Upload]:
    """The linked uploads of one dataset under ``prefix``, in (resource, issue time) order.

    One lookup whose only condition is the dataset, so every planner takes the dataset's index,
    with or without statistics: given the state as well, or an ORDER BY, SQLite walked the state
    index and PostgreSQL the resource index (every linked upload, for each dataset). The state,
    the prefix and the order are applied here, over the dataset's rows only.
    """
    rows = Upload.objects.filter(package_id=package_id).only(*_LINKED_FIELDS, "state")
    linked = [u for u in rows if u.state == UploadState.LINKED and u.key.startswith(prefix)]
    return sorted(linked, key=lambda u: (u.resource_id, u.issued_at))


class SeenIds:
    """The upload ids a run's listing showed, kept in the database (ReconcileSeen), not in Python."""

    def __init__(self, run: ReconcileRun) -> None:
        self.run = run

    def __enter__(self) -> SeenIds:
        # Rows of a run that crashed before cleaning up go now; a running scan keeps its own.
        ReconcileSeen.objects.exclude(run__state=RunState.RUNNING).delete()
        return self

    def __exit__(self, *exc: object) -> None:
        ReconcileSeen.objects.filter(run=self.run).delete()

    def add(self, ids: Sequence[uuid.UUID]) -> None:
        """Remember ids as listed."""
        ReconcileSeen.objects.bulk_create(
            [ReconcileSeen(run=self.run, upload_id=i) for i in ids], batch_size=LEDGER_CHUNK_SIZE, ignore_conflicts=True
        )

    def subquery(self) -> QuerySet[ReconcileSeen, uuid.UUID]:
        """The listed ids, for ``exclude(id__in=...)``."""
        return ReconcileSeen.objects.filter(run=self.run).values_list("upload_id", flat=True)

    def listed(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of ``ids`` the listing showed."""
        return set(self.subquery().filter(upload_id__in=ids))


class Reconciler:
    """One scan: feed it listing pages, then let it check the ledger and CKAN, then finish."""

    def __init__(
        self,
        run: ReconcileRun,
        *,
        prefix: str,
        seen: SeenIds,
        fix: bool = False,
        dry_run: bool = False,
        delete_orphans_older_than_days: int | None = None,
        check_ckan: bool = True,
        actor: str = "reconcile",
        progress: Progress | None = None,
    ) -> None:
        self.run = run
        self.bucket = storage.bucket_name()
        self.prefix = prefix
        self.seen = seen
        self.requested_fix = fix
        self.fix = fix and not dry_run
        self.dry_run = dry_run
        self.now = run.started_at
        self.delete_before = (
            self.now - timedelta(days=delete_orphans_older_than_days)
            if delete_orphans_older_than_days is not None
            else None
        )
        self.check_ckan = check_ckan
        self.actor = actor
        self.progress = progress
        self.pages = 0
        self.counts: dict[str, Any] = {
            "found": {kind: 0 for kind in DiscrepancyKind.values},
            "new": {kind: 0 for kind in DiscrepancyKind.values},
            "healed": {kind: 0 for kind in DiscrepancyKind.values},
            "would_heal": {kind: 0 for kind in DiscrepancyKind.values},
            "heal_failed": 0,
            "would_delete": 0,
            "deleted": 0,
            "ignored": 0,
            "resolved": 0,
            "ckan_errors": 0,
            "storage_errors": 0,
        }
        # Kinds whose check could not finish: their old findings must not be marked resolved.
        self.incomplete: set[str] = set()

    # --- the listing pass -------------------------------------------------------------------

    def scan_pages(self, pages: Iterable[Sequence[storage.ObjectInfo]]) -> None:
        """Compare each listing page with the ledger (one query per page)."""
        for page in pages:
            self.scan_page(page)

    def scan_page(self, page: Sequence[storage.ObjectInfo]) -> None:
        """Classify one page of objects: unevented, superseded, orphan, or as it should be."""
        # The public layout names the upload in its key; the s3filestore one is shared with CKAN's
        # own uploads, so there a key the ledger does not know is CKAN's, never an orphan.
        ids = layout.upload_ids_by_key(obj.key for obj in page)
        rows = {
            pk: (key, state, etag)
            for pk, key, state, etag in Upload.objects.filter(id__in=list(ids.values())).values_list(
                "id", "key", "state", "object_etag"
            )
        }
        findings: list[Finding] = []
        listed: list[uuid.UUID] = []
        for obj in page:
            upload_id = ids.get(obj.key)
            row = rows.get(upload_id) if upload_id is not None else None
            if upload_id is None and layout.is_s3filestore():
                self.counts["ckan_own_objects"] = self.counts.get("ckan_own_objects", 0) + 1
                continue
            if upload_id is None or row is None or row[0] != obj.key or row[1] == UploadState.ABORTED:
                # An aborted upload's object (a PUT through a URL still valid after the abort) is
                # no one's file either: reclaimable like an orphan.
                findings.append(self._orphan(obj))
                continue
            listed.append(upload_id)
            state = row[1]
            if state in (UploadState.ISSUED, UploadState.EXPIRED):
                findings.append(
                    Finding(
                        DiscrepancyKind.UNEVENTED,
                        obj.key,
                        upload_id,
                        obj.size,
                        obj.last_modified,
                        {"state": state, "etag": obj.etag},
                    )
                )
            elif state == UploadState.FAILED and storage.normal_etag(row[2]) != storage.normal_etag(obj.etag):
                # Failed without ever seeing this object (every attempt ran before the PUT
                # landed, or a re-PUT): linking it is what the client wanted.
                findings.append(
                    Finding(
                        DiscrepancyKind.UNLINKED,
                        obj.key,
                        upload_id,
                        obj.size,
                        obj.last_modified,
                        {"state": state, "etag": obj.etag},
                    )
                )
            elif state == UploadState.SUPERSEDED:
                findings.append(
                    Finding(
                        DiscrepancyKind.SUPERSEDED,
                        obj.key,
                        upload_id,
                        obj.size,
                        obj.last_modified,
                        {"reclaimable_bytes": obj.size},
                    )
                )
        self.seen.add(listed)
        self.run.objects_scanned += len(page)
        self.run.uploads_checked += len(rows)
        for recorded in self.record(findings):
            if recorded.finding.kind in (DiscrepancyKind.UNEVENTED, DiscrepancyKind.UNLINKED):
                self._heal_unevented(recorded)
            elif recorded.finding.kind == DiscrepancyKind.ORPHAN:
                self._delete_orphan(recorded)
        self.pages += 1
        if self.pages % SAVE_EVERY_PAGES == 0 and not self.dry_run:
            self.run.save(update_fields=["objects_scanned", "uploads_checked"])
        if self.progress:
            self.progress("listing", self.run.objects_scanned)

    def _orphan(self, obj: storage.ObjectInfo) -> Finding:
        age_days = round((self.now - obj.last_modified).total_seconds() / 86400, 2) if obj.last_modified else None
        return Finding(
            DiscrepancyKind.ORPHAN,
            obj.key,
            None,
            obj.size,
            obj.last_modified,
            {"age_days": age_days, "size": obj.size, "etag": obj.etag},
        )

    # --- multipart uploads in progress -------------------------------------------------------

    def scan_multipart_pages(self, pages: Iterable[Sequence[storage.MultipartInfo]]) -> None:
        """Report multipart uploads in progress that the ledger does not know as open (``--fix`` aborts them)."""
        for page in pages:
            by_key = layout.upload_ids_by_key({item.key for item in page})
            ids = {item.upload_id: by_key[item.key] for item in page if item.key in by_key}
            rows = Upload.objects.filter(id__in=list(ids.values())).values_list(
                "id", "key", "multipart_upload_id", "state"
            )
            existing = set()
            known = set()
            for pk, key, multipart_id, state in rows:
                existing.add(pk)
                if state == UploadState.ISSUED:
                    known.add((key, multipart_id))
            findings = [
                Finding(
                    DiscrepancyKind.STRAY_MULTIPART,
                    item.key,
                    ids[item.upload_id] if ids.get(item.upload_id) in existing else None,
                    object_last_modified=item.initiated,
                    detail={"key": item.key, "upload_id": item.upload_id},
                )
                for item in page
                if (item.key, item.upload_id) not in known
            ]
            for recorded in self.record(findings):
                self._abort_stray(recorded)

    def _abort_stray(self, recorded: Recorded) -> None:
        if not self._may_heal(recorded):
            return
        self._apply(recorded, heal_stray_multipart(recorded.finding))

    # --- the ledger pass --------------------------------------------------------------------

    def check_ledger(self) -> None:
        """What the listing cannot show: expired URLs, phantoms, drift in CKAN."""
        self._check_expired()
        self._check_linked()

    def _check_expired(self) -> None:
        cutoff = self.now - timedelta(seconds=settings.UPLOAD_EXPIRY_GRACE_SECONDS)
        stale = Upload.objects.filter(
            state=UploadState.ISSUED, key__startswith=self.prefix, expires_at__lt=cutoff
        ).exclude(id__in=self.seen.subquery())
        for chunk in _keyset(stale, "id"):
            self.run.uploads_checked += len(chunk)
            findings = [
                Finding(DiscrepancyKind.EXPIRED, u.key, u.id, detail={"expires_at": u.expires_at.isoformat()})
                for u in chunk
            ]
            for recorded in self.record(findings):
                self._heal_expired(recorded)
            if self.progress:
                self.progress("ledger", self.run.uploads_checked)

    def _check_linked(self) -> None:
        linked = Upload.objects.filter(state=UploadState.LINKED, key__startswith=self.prefix).only(*_LINKED_FIELDS)
        for package_ids in _distinct_keyset(linked, "package_id"):
            for package_id in package_ids:
                # One dataset at a time: memory is bounded by the largest dataset, which
                # package_show returns whole anyway.
                group = _of_dataset(self.prefix, package_id)
                if package_id:
                    self._check_group(group)
                    continue
                # No dataset: resource files issued before the package id was known, and
                # organization and group images (one organization_show / group_show each).
                files = [u for u in group if u.target_kind == TargetKind.RESOURCE]
                images = [u for u in group if u.target_kind != TargetKind.RESOURCE]
                if files:
                    self._check_group(files)
                for start in range(0, len(images), LEDGER_CHUNK_SIZE):
                    self._check_group(images[start : start + LEDGER_CHUNK_SIZE])

    def _check_group(self, uploads: list[Upload]) -> None:
        self.run.uploads_checked += len(uploads)
        listed = self.seen.listed([u.id for u in uploads])
        present: list[Upload] = []
        phantoms: list[Finding] = []
        for upload in uploads:
            if upload.id in listed or self._still_there(upload):
                present.append(upload)
            else:
                phantoms.append(
                    Finding(
                        DiscrepancyKind.PHANTOM,
                        upload.key,
                        upload.id,
                        upload.object_size,
                        upload.object_last_modified,
                        {"linked_url": upload.linked_url, "resource_id": upload.resource_id},
                    )
                )
        self.record(phantoms)
        if self.check_ckan and present:
            if present[0].target_kind == TargetKind.RESOURCE:
                self._check_dataset(present)
            else:
                self._check_images(present)
        if self.progress:
            self.progress("ledger", self.run.uploads_checked)

    def _still_there(self, upload: Upload) -> bool:
        # Not in the listing: confirm with a HEAD, since an object written after the listing
        # passed its key (and linked since) is not a phantom. Phantoms are rare, so this is cheap.
        # After one failure the bucket is unreachable: stop asking, leave phantoms unresolved.
        if DiscrepancyKind.PHANTOM in self.incomplete:
            return True
        try:
            return storage.head_object(upload.key) is not None
        except storage.StorageError as exc:
            log.warning("reconcile: could not confirm %s: %s", upload.key, exc)
            self.counts["storage_errors"] += 1
            self.incomplete.add(DiscrepancyKind.PHANTOM)
            return True

    def _check_dataset(self, uploads: list[Upload]) -> None:
        """One package_show per dataset for all its linked uploads (a large portal is not hammered)."""
        token = ckan.service_token()
        package_id = uploads[0].package_id
        resources: dict[str, dict[str, Any]] = {}
        missing_reason = "resource_deleted"
        dataset_private: bool | None = None
        try:
            if package_id:
                package = ckan.package_show(package_id, token=token)
                if package.get("state") == "deleted":
                    missing_reason = "dataset_deleted"
                else:
                    resources = {str(r.get("id")): r for r in package.get("resources", [])}
                    dataset_private = privacy.is_private(package)
            else:
                # Uploads issued before the package id was known: no grouping possible.
                for upload in uploads:
                    try:
                        resources[upload.resource_id] = ckan.resource_show(upload.resource_id, token=token)
                    except ckan.CkanNotFound:
                        pass
        except ckan.CkanNotFound:
            missing_reason = "dataset_deleted"
        except ckan.CkanError as exc:
            log.warning("reconcile: CKAN check of dataset %s failed: %s", package_id, exc.message)
            self.counts["ckan_errors"] += 1
            self.incomplete.update({DiscrepancyKind.DRIFT, DiscrepancyKind.EXPOSURE})
            return
        self.run.resources_checked += len(uploads)
        findings: list[Finding] = []
        for upload in uploads:
            resource = resources.get(upload.resource_id)
            if resource is None:
                detail: dict[str, Any] = {"reason": missing_reason, "resource_id": upload.resource_id}
            else:
                detail = self._drift(upload, resource)
            if detail:
                detail["package_id"] = package_id
                findings.append(
                    Finding(
                        DiscrepancyKind.DRIFT,
                        upload.key,
                        upload.id,
                        upload.object_size,
                        upload.object_last_modified,
                        detail,
                    )
                )
        for recorded in self.record(findings):
            self._heal_drift(recorded)
        if dataset_private is not None:
            self._check_exposure(uploads, package_id, dataset_private)
        if self.progress:
            self.progress("ckan", self.run.resources_checked)

    def _check_images(self, uploads: list[Upload]) -> None:
        """Each linked organization or group image: is it still the target's image_url in CKAN?"""
        token = ckan.service_token()
        findings: list[Finding] = []
        for upload in uploads:
            expected_url = upload.linked_url or storage.public_url(upload.key)
            base = {"target_kind": upload.target_kind, "target_id": upload.target_id}
            try:
                shown = ckan.group_show(upload.target_kind, upload.target_id, token=token)
            except ckan.CkanNotFound:
                detail: dict[str, Any] = {"reason": "target_deleted", **base}
            except ckan.CkanError as exc:
                log.warning(
                    "reconcile: CKAN check of %s %s failed: %s", upload.target_kind, upload.target_id, exc.message
                )
                self.counts["ckan_errors"] += 1
                self.incomplete.add(DiscrepancyKind.DRIFT)
                return
            else:
                if shown.get("state") == "deleted":
                    detail = {"reason": "target_deleted", **base}
                elif shown.get("image_url") != expected_url:
                    detail = {
                        "reason": "image_url",
                        "ckan_image_url": shown.get("image_url"),
                        "ledger_url": expected_url,
                        **base,
                    }
                else:
                    detail = {}
            self.run.resources_checked += 1
            if detail:
                findings.append(
                    Finding(
                        DiscrepancyKind.DRIFT,
                        upload.key,
                        upload.id,
                        upload.object_size,
                        upload.object_last_modified,
                        detail,
                    )
                )
        for recorded in self.record(findings):
            self._heal_drift(recorded)
        if self.progress:
            self.progress("ckan", self.run.resources_checked)

    def _check_exposure(self, uploads: list[Upload], package_id: str, dataset_private: bool) -> None:
        """Files whose readability no longer matches their dataset's (made private, or public again)."""
        should_be_public = privacy.may_be_public(dataset_private)
        findings: list[Finding] = []
        for upload in uploads:
            is_public = self._object_is_public(upload, dataset_private)
            if is_public is None or is_public == should_be_public:
                continue
            detail: dict[str, Any] = {
                "reason": "dataset_private" if dataset_private else "dataset_public",
                "dataset_private": dataset_private,
                "object_public": is_public,
                "package_id": package_id,
                "resource_id": upload.resource_id,
            }
            if not settings.STORAGE_OBJECT_ACLS:
                detail["operator_action"] = privacy.NOT_HEALABLE_WITHOUT_ACLS
            findings.append(
                Finding(
                    DiscrepancyKind.EXPOSURE,
                    upload.key,
                    upload.id,
                    upload.object_size,
                    upload.object_last_modified,
                    detail,
                )
            )
        for recorded in self.record(findings):
            self._heal_exposure(recorded)

    def _object_is_public(self, upload: Upload, dataset_private: bool) -> bool | None:
        """Whether anyone with the bucket URL can read the file; None when that cannot be told now."""
        if not settings.STORAGE_OBJECT_ACLS:
            if privacy.served_through_ckan():
                # s3filestore style on a store without ACLs: the bucket is private and CKAN signs
                # every download, whatever the dataset: nothing per object to compare.
                return None
            # No per-object ACLs: the public base URL serves every object of the bucket.
            return True
        if not dataset_private and not upload.dataset_private and privacy.may_be_public(False):
            # Issued public-read for a public dataset and never changed since: no need to ask.
            return True
        # Where a wrong belief would leak a file (or break a link), ask the bucket: only files of
        # datasets that are private now, or were made private by a fix, cost one call.
        if DiscrepancyKind.EXPOSURE in self.incomplete:
            return None
        try:
            return storage.object_is_public(upload.key)
        except storage.StorageError as exc:
            log.warning("reconcile: could not read the ACL of %s: %s", upload.key, exc)
            self.counts["storage_errors"] += 1
            self.incomplete.add(DiscrepancyKind.EXPOSURE)
            return None

    @staticmethod
    def _drift(upload: Upload, resource: dict[str, Any]) -> dict[str, Any]:
        expected_url = upload.linked_url or storage.public_url(upload.key)
        detail: dict[str, Any] = {}
        if layout.link_differs(upload.key, upload.linked_url, resource):
            detail.update({"reason": "url", "ckan_url": resource.get("url"), "ledger_url": expected_url})
        ckan_size = resource.get("size")
        if upload.object_size is not None and str(ckan_size) != str(upload.object_size):
            detail.update({"ckan_size": ckan_size, "ledger_size": upload.object_size})
            detail.setdefault("reason", "size")
        return detail

    # --- recording --------------------------------------------------------------------------

    def record(self, findings: list[Finding]) -> list[Recorded]:
        """Write a batch of findings: a finding already open (or ignored) is only marked seen again."""
        if not findings:
            return []
        by_fingerprint = {f.fingerprint: f for f in findings}
        known = {
            fp: (pk, state)
            for fp, pk, state in Discrepancy.objects.filter(
                fingerprint__in=list(by_fingerprint),
                state__in=[DiscrepancyState.OPEN, DiscrepancyState.IGNORED],
            ).values_list("fingerprint", "id", "state")
        }
        fresh = [f for fp, f in by_fingerprint.items() if fp not in known]
        for finding in by_fingerprint.values():
            self.counts["found"][finding.kind] += 1
        for finding in fresh:
            self.counts["new"][finding.kind] += 1
        self.counts["ignored"] += sum(1 for _, state in known.values() if state == DiscrepancyState.IGNORED)
        if self.dry_run:
            return [
                Recorded(f, None, known.get(fp, (None, DiscrepancyState.OPEN))[1], fp not in known)
                for fp, f in by_fingerprint.items()
            ]
        if known:
            Discrepancy.objects.filter(id__in=[pk for pk, _ in known.values()]).update(last_seen_run=self.run)
        if fresh:
            # ignore_conflicts: a scan running at the same time may have opened the same finding.
            Discrepancy.objects.bulk_create(
                [
                    Discrepancy(
                        run=self.run,
                        last_seen_run=self.run,
                        kind=f.kind,
                        fingerprint=f.fingerprint,
                        upload_id=f.upload_id,
                        bucket=self.bucket,
                        key=f.key,
                        object_size=f.object_size,
                        object_last_modified=f.object_last_modified,
                        detail=f.detail,
                    )
                    for f in fresh
                ],
                ignore_conflicts=True,
            )
            created = Discrepancy.objects.filter(
                fingerprint__in=[f.fingerprint for f in fresh], state=DiscrepancyState.OPEN
            ).values_list("fingerprint", "id")
            for fp, pk in created:
                known[fp] = (pk, DiscrepancyState.OPEN)
        return [Recorded(f, known[fp][0], known[fp][1], f in fresh) for fp, f in by_fingerprint.items() if fp in known]

    # --- heals ------------------------------------------------------------------------------

    def _close(self, recorded: Recorded, state: str, **detail: Any) -> None:
        assert recorded.discrepancy_id is not None
        Discrepancy.objects.filter(pk=recorded.discrepancy_id, state=DiscrepancyState.OPEN).update(
            state=state,
            resolved_at=timezone.now(),
            resolved_by=self.actor,
            detail={**recorded.finding.detail, **detail},
        )
        if state == DiscrepancyState.HEALED:
            self.counts["healed"][recorded.finding.kind] += 1

    def _may_heal(self, recorded: Recorded) -> bool:
        if recorded.state != DiscrepancyState.OPEN or not self.requested_fix:
            return False
        if self.dry_run:
            self.counts["would_heal"][recorded.finding.kind] += 1
            return False
        return recorded.discrepancy_id is not None

    def _heal_unevented(self, recorded: Recorded) -> None:
        if not self._may_heal(recorded):
            return
        outcome = heal_unevented(recorded.finding, actor=self.actor)
        self._apply(recorded, outcome)

    def _heal_expired(self, recorded: Recorded) -> None:
        if not self._may_heal(recorded):
            return
        self._apply(recorded, heal_expired(recorded.finding))

    def _heal_drift(self, recorded: Recorded) -> None:
        if not self._may_heal(recorded):
            return
        self._apply(recorded, heal_drift(recorded.finding, actor=self.actor))

    def _heal_exposure(self, recorded: Recorded) -> None:
        if not self._may_heal(recorded):
            return
        self._apply(recorded, heal_exposure(recorded.finding, actor=self.actor))

    def _delete_orphan(self, recorded: Recorded) -> None:
        finding = recorded.finding
        if (
            self.delete_before is None
            or recorded.state != DiscrepancyState.OPEN
            or finding.object_last_modified is None
            or finding.object_last_modified >= self.delete_before
        ):
            return
        if self.dry_run or recorded.discrepancy_id is None:
            self.counts["would_delete"] += 1
            return
        try:
            storage.delete_object(finding.key)
        except storage.StorageError as exc:
            log.warning("reconcile: could not delete orphan %s: %s", finding.key, exc)
            self.counts["storage_errors"] += 1
            return
        self.counts["deleted"] += 1
        self._close(recorded, DiscrepancyState.HEALED, deleted=True)

    def _apply(self, recorded: Recorded, outcome: HealOutcome) -> None:
        if outcome.state:
            self._close(recorded, outcome.state, heal=outcome.note)
        else:
            self.counts["heal_failed"] += 1
            assert recorded.discrepancy_id is not None
            Discrepancy.objects.filter(pk=recorded.discrepancy_id).update(
                detail={**recorded.finding.detail, "heal": outcome.note}
            )

    # --- the end ----------------------------------------------------------------------------

    def resolve_vanished(self) -> None:
        """Open findings of earlier runs that this complete scan no longer sees resolved themselves."""
        if self.dry_run:
            return
        kinds = [k for k in DiscrepancyKind.values if k not in self.incomplete]
        if not self.check_ckan:
            kinds = [k for k in kinds if k not in (DiscrepancyKind.DRIFT, DiscrepancyKind.EXPOSURE)]
        self.counts["resolved"] = (
            Discrepancy.objects.filter(state=DiscrepancyState.OPEN, kind__in=kinds)
            .exclude(last_seen_run=self.run)
            .update(state=DiscrepancyState.RESOLVED, resolved_at=timezone.now(), resolved_by=self.actor)
        )


@dataclass(frozen=True)
class HealOutcome:
    """``state`` is the discrepancy's new state (healed / resolved), empty when the heal failed."""

    state: str
    note: str


def heal_unevented(finding: Finding, *, actor: str) -> HealOutcome:
    """The object is there but no event came: record it as seen, which enqueues its link."""
    upload = Upload.objects.filter(pk=finding.upload_id).first() if finding.upload_id else None
    if upload is None:
        return HealOutcome(DiscrepancyState.RESOLVED, "upload no longer in the ledger")
    moved = ingest.mark_object_seen(
        upload,
        size=finding.object_size,
        etag=str(finding.detail.get("etag", "")),
        seen_at=timezone.now(),
        trigger=LinkTrigger.RECONCILE,
    )
    if moved:
        return HealOutcome(DiscrepancyState.HEALED, f"marked uploaded by {actor}; link enqueued")
    return HealOutcome(DiscrepancyState.RESOLVED, f"already {upload.state}: nothing to do")


def heal_stray_multipart(finding: Finding) -> HealOutcome:
    """Abort a multipart upload the ledger does not know (or no longer takes parts for)."""
    key, multipart_id = str(finding.detail.get("key", "")), str(finding.detail.get("upload_id", ""))
    if not key or not multipart_id:
        return HealOutcome("", "not healable: the finding lacks the key or upload id")
    try:
        aborted = storage.abort_multipart_upload(key, upload_id=multipart_id)
    except storage.StorageError as exc:
        return HealOutcome("", f"abort failed: {exc}")
    if aborted:
        return HealOutcome(DiscrepancyState.HEALED, "multipart upload aborted; its parts are deleted")
    return HealOutcome(DiscrepancyState.RESOLVED, "the store no longer knew this multipart upload")


def heal_expired(finding: Finding) -> HealOutcome:
    """Mark an issued URL that expired without an object as expired (conditional: races are fine)."""
    if finding.upload_id is None:
        return HealOutcome(DiscrepancyState.RESOLVED, "no upload to expire")
    if sweep.expire_uploads([finding.upload_id], now=timezone.now()):
        return HealOutcome(DiscrepancyState.HEALED, "marked expired")
    return HealOutcome(DiscrepancyState.RESOLVED, "no longer issued: nothing to do")


def heal_drift(finding: Finding, *, actor: str) -> HealOutcome:
    """Re-patch CKAN with the ledger's object, unless a newer upload of that resource is linked."""
    upload = Upload.objects.filter(pk=finding.upload_id).first() if finding.upload_id else None
    if upload is None or upload.state != UploadState.LINKED:
        return HealOutcome(DiscrepancyState.RESOLVED, "upload no longer linked: nothing to re-patch")
    if finding.detail.get("reason") in {"resource_deleted", "dataset_deleted", "target_deleted"}:
        return HealOutcome("", f"not healable: {finding.detail['reason']} in CKAN")
    # link_upload decides "is a newer object already linked?" under its lock (one place for
    # that rule): then it marks this upload superseded instead of patching.
    outcome = link.link_upload(upload_id=upload.id, trigger=LinkTrigger.RECONCILE, triggered_by=actor, force=True)
    if outcome == LinkOutcome.LINKED:
        return HealOutcome(DiscrepancyState.HEALED, f"re-patched in CKAN by {actor}")
    if outcome == LinkOutcome.SUPERSEDED:
        return HealOutcome(DiscrepancyState.RESOLVED, "not re-patched: a newer upload of this resource is linked")
    return HealOutcome("", f"re-patch outcome: {outcome}")


def heal_exposure(finding: Finding, *, actor: str) -> HealOutcome:
    """Give the object the readability its dataset has now (S3 object ACLs); say what to do elsewhere."""
    upload = Upload.objects.filter(pk=finding.upload_id).first() if finding.upload_id else None
    if upload is None:
        return HealOutcome(DiscrepancyState.RESOLVED, "upload no longer in the ledger")
    if not settings.STORAGE_OBJECT_ACLS:
        return HealOutcome("", privacy.NOT_HEALABLE_WITHOUT_ACLS)
    # Read the dataset again: a finding may be older than the last change of visibility, and
    # making a file public on stale information would leak it.
    try:
        package = ckan.package_show(upload.package_id, token=ckan.service_token())
    except ckan.CkanError as exc:
        return HealOutcome("", f"could not read the dataset from CKAN: {exc.message}")
    private = privacy.is_private(package)
    public = privacy.may_be_public(private)
    try:
        storage.set_object_public(upload.key, public=public)
    except storage.StorageError as exc:
        return HealOutcome("", f"could not change the object's ACL: {exc}")
    Upload.objects.filter(pk=upload.pk).update(dataset_private=private)
    return HealOutcome(DiscrepancyState.HEALED, f"object made {'public-read' if public else 'private'} by {actor}")


HEALABLE = {
    DiscrepancyKind.UNEVENTED,
    DiscrepancyKind.UNLINKED,
    DiscrepancyKind.EXPIRED,
    DiscrepancyKind.DRIFT,
    DiscrepancyKind.STRAY_MULTIPART,
    DiscrepancyKind.EXPOSURE,
}


def heal_discrepancy(*, discrepancy_id: int, actor: str) -> str:
    """Heal one open discrepancy from the admin; returns what happened, in words."""
    # No transaction around this: a heal may call CKAN, and each heal step is itself conditional.
    discrepancy = Discrepancy.objects.get(pk=discrepancy_id)
    if discrepancy.state != DiscrepancyState.OPEN:
        return f"{discrepancy.key}: already {discrepancy.state}"
    if discrepancy.kind not in HEALABLE:
        return f"{discrepancy.key}: a {discrepancy.get_kind_display().lower()} has no automatic heal"
    finding = Finding(
        discrepancy.kind,
        discrepancy.key,
        discrepancy.upload_id,
        discrepancy.object_size,
        discrepancy.object_last_modified,
        dict(discrepancy.detail),
    )
    if discrepancy.kind in (DiscrepancyKind.UNEVENTED, DiscrepancyKind.UNLINKED):
        outcome = heal_unevented(finding, actor=actor)
    elif discrepancy.kind == DiscrepancyKind.STRAY_MULTIPART:
        outcome = heal_stray_multipart(finding)
    elif discrepancy.kind == DiscrepancyKind.EXPIRED:
        outcome = heal_expired(finding)
    elif discrepancy.kind == DiscrepancyKind.EXPOSURE:
        outcome = heal_exposure(finding, actor=actor)
    else:
        outcome = heal_drift(finding, actor=actor)
    changes: dict[str, Any] = {"detail": {**discrepancy.detail, "heal": outcome.note}}
    if outcome.state:
        changes.update(state=outcome.state, resolved_at=timezone.now(), resolved_by=actor)
    Discrepancy.objects.filter(pk=discrepancy.pk, state=DiscrepancyState.OPEN).update(**changes)
    return f"{discrepancy.key}: {outcome.note}"


@transaction.atomic
def ignore_discrepancies(*, discrepancy_ids: Sequence[int], actor: str) -> int:
    """Mark open discrepancies as ignored: later scans keep seeing them but never reopen or heal them."""
    return Discrepancy.objects.filter(pk__in=list(discrepancy_ids), state=DiscrepancyState.OPEN).update(
        state=DiscrepancyState.IGNORED, resolved_at=timezone.now(), resolved_by=actor
    )


def run_reconcile(
    *,
    fix: bool = False,
    dry_run: bool = False,
    delete_orphans_older_than_days: int | None = None,
    triggered_by: str = "",
    progress: Progress | None = None,
    pages: Iterable[Sequence[storage.ObjectInfo]] | None = None,
    multipart_pages: Iterable[Sequence[storage.MultipartInfo]] | None = None,
    check_ckan: bool = True,
) -> ReconcileRun:
    """Scan bucket vs ledger vs CKAN, record a ReconcileRun and its discrepancies, heal with ``fix``.

    ``pages`` replaces the bucket listing (benchmarks feed synthetic pages; then
    ``multipart_pages`` defaults to none); ``check_ckan``
    False skips the CKAN comparison (and leaves earlier drift findings open).
    """
    if delete_orphans_older_than_days is not None and delete_orphans_older_than_days < 0:
        raise ValueError("delete_orphans_older_than_days must be 0 or more")
    prefix = layout.listing_prefix()
    run = ReconcileRun.objects.create(fix=fix and not dry_run, dry_run=dry_run, triggered_by=triggered_by)
    actor = f"reconcile:{triggered_by}" if triggered_by else "reconcile"
    try:
        with SeenIds(run) as seen:
            scan = Reconciler(
                run,
                prefix=prefix,
                seen=seen,
                fix=fix,
                dry_run=dry_run,
                delete_orphans_older_than_days=delete_orphans_older_than_days,
                check_ckan=check_ckan and bool(settings.CKAN_URL),
                actor=actor,
                progress=progress,
            )
            if pages is None:
                pages = storage.iter_object_pages(prefix, page_size=LISTING_PAGE_SIZE)
                if multipart_pages is None:
                    multipart_pages = storage.iter_multipart_upload_pages(prefix)
            scan.scan_pages(pages)
            scan.scan_multipart_pages(multipart_pages or [])
            scan.check_ledger()
            scan.resolve_vanished()
    except Exception as exc:
        run.state = RunState.FAILED
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        run.finished_at = timezone.now()
        run.save()
        log.exception("reconcile run %s failed", run.pk)
        raise
    if not scan.check_ckan:
        scan.counts["ckan_checked"] = False
    run.counts = scan.counts
    run.state = RunState.FINISHED
    run.finished_at = timezone.now()
    run.save()
    log.info("reconcile run %s finished: %s", run.pk, run.counts)
    return run
