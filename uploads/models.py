"""The ledger: every URL issued, every storage event received, every attempt to link."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class UploadState(models.TextChoices):
    ISSUED = "issued", "Issued"
    UPLOADED = "uploaded", "Uploaded"
    LINKED = "linked", "Linked"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"
    SUPERSEDED = "superseded", "Superseded"
    ABORTED = "aborted", "Aborted"


class TargetKind(models.TextChoices):
    """What an upload's file becomes in CKAN: a resource's file, or an organization's or group's image."""

    RESOURCE = "resource", "Resource file"
    ORGANIZATION = "organization", "Organization image"
    GROUP = "group", "Group image"


class Upload(models.Model):
    """One presigned URL issued for one CKAN resource (or organization or group image), and what became of it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # "Last writer wins" holds per target (kind + id). A resource's id is also in resource_id;
    # an image's upload has an empty resource_id.
    target_kind = models.CharField(max_length=20, choices=TargetKind.choices, default=TargetKind.RESOURCE)
    target_id = models.CharField(max_length=100, blank=True)
    # The organization's or group's name and title (for an image), as CKAN showed them at issuance.
    target_name = models.CharField(max_length=100, blank=True)
    target_title = models.CharField(max_length=500, blank=True)
    resource_id = models.CharField(max_length=100)
    package_id = models.CharField(max_length=100, blank=True)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255)
    declared_size = models.BigIntegerField(null=True, blank=True)
    declared_sha256 = models.CharField(max_length=64, blank=True)
    bucket = models.CharField(max_length=63)
    key = models.CharField(max_length=1024, unique=True)

    requested_by = models.CharField(max_length=200, blank=True, help_text="CKAN user name")
    requested_by_id = models.CharField(max_length=100, blank=True, help_text="CKAN user id")
    # HMAC of the requester's token with the secret key: the same token acts on its upload
    # without asking CKAN who it is. Never the token itself.
    token_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    issued_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    # Multipart uploads (files above MULTIPART_THRESHOLD): the store's upload id and the plan.
    multipart_upload_id = models.CharField(max_length=1024, blank=True)
    part_size = models.BigIntegerField(null=True, blank=True)
    part_count = models.PositiveIntegerField(null=True, blank=True)

    # What the object turned out to be (from events, confirmed by HEAD before linking).
    object_size = models.BigIntegerField(null=True, blank=True)
    object_etag = models.CharField(max_length=200, blank=True)
    object_content_type = models.CharField(max_length=255, blank=True)
    object_last_modified = models.DateTimeField(null=True, blank=True)
    object_seen_at = models.DateTimeField(null=True, blank=True)
    object_deleted_at = models.DateTimeField(null=True, blank=True)
    # The SHA-256 the store itself checked (S3 checksums); declared_sha256 is only the client's word.
    verified_sha256 = models.CharField(max_length=64, blank=True)

    state = models.CharField(max_length=20, choices=UploadState.choices, default=UploadState.ISSUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # A worker owns the row while claim_token is set; claimed_at lets the sweep release it.
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)

    linked_at = models.DateTimeField(null=True, blank=True)
    linked_url = models.URLField(max_length=2048, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    dataset_private = models.BooleanField(
        default=False,
        help_text="The dataset was private when the file's readability was set (at issuance, or by a reconcile fix)",
    )
    # Names as CKAN showed them at issuance, for people (the ids stay the keys): from the answers
    # the issuance already gets (the resource, the dataset with its organization).
    resource_name = models.CharField(max_length=500, blank=True)
    dataset_name = models.CharField(max_length=100, blank=True)
    dataset_title = models.CharField(max_length=500, blank=True)
    organization_name = models.CharField(max_length=100, blank=True)
    organization_title = models.CharField(max_length=500, blank=True)
    # When a failure digest named this upload; reset when the upload fails (again).
    failure_notified_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-issued_at"]
        permissions = [("replay_upload", "Can replay the link of an upload")]
        indexes = [
            models.Index(fields=["state", "-issued_at"], name="upload_state_issued"),
            models.Index(fields=["-issued_at"], name="upload_issued"),
            models.Index(fields=["resource_id", "-issued_at"], name="upload_resource_issued"),
            models.Index(fields=["package_id", "-issued_at"], name="upload_package_issued"),
            models.Index(fields=["requested_by", "-issued_at"], name="upload_requester_issued"),
            # The admin's file-name search is a prefix match (LIKE 'x%'); PostgreSQL uses a btree
            # for that only with the pattern operator class (measured: 677 ms -> see benchmarks).
            models.Index(fields=["filename"], name="upload_filename_prefix", opclasses=["varchar_pattern_ops"]),
            models.Index(
                fields=["next_attempt_at"],
                name="upload_due_retry",
                condition=Q(state="uploaded"),
            ),
            models.Index(fields=["expires_at"], name="upload_issued_expiry", condition=Q(state="issued")),
            models.Index(fields=["claimed_at"], name="upload_claimed", condition=Q(claim_token__isnull=False)),
            models.Index(fields=["organization_name", "-issued_at"], name="upload_org_issued"),
            # target_id first: a resource's lookups stay on resource_id (upload_resource_issued),
            # and no planner takes this index for a `target_kind = 'resource'` filter.
            models.Index(fields=["target_id", "-issued_at"], name="upload_target_issued"),
            models.Index(fields=["dataset_name"], name="upload_dataset_name_prefix", opclasses=["varchar_pattern_ops"]),
            models.Index(
                fields=["updated_at"],
                name="upload_failure_unnotified",
                condition=Q(state="failed", failure_notified_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        if self.target_kind != TargetKind.RESOURCE:
            return f"{self.filename} → {self.target_kind} {self.target_name or self.target_id} ({self.state})"
        return f"{self.filename} → {self.resource_id} ({self.state})"

    @property
    def is_multipart(self) -> bool:
        return bool(self.multipart_upload_id)


class ResourceLease(models.Model):
    """Who may patch one CKAN target right now (a resource by id; an image by ``<kind>:<id>``): a lease.

    ``holder`` is the claim token of the link that holds it until ``expires_at``; every new holder
    bumps ``fence``, so a worker that lost its lease (it outlived ``expires_at`` and another took
    it) sees its fence is gone before and after it patches. ``repatch`` says a patch landed after
    its lease was lost: CKAN may show an older object, so the next holder writes the newest again.
    No transaction stays open while CKAN answers (uploads/services/link.py).
    """

    resource_id = models.CharField(max_length=100, unique=True)
    holder = models.UUIDField(null=True, blank=True)
    upload_id = models.UUIDField(null=True, blank=True, help_text="The upload being linked by the holder")
    expires_at = models.DateTimeField(null=True, blank=True)
    fence = models.PositiveBigIntegerField(default=0)
    repatch = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"lease on {self.resource_id} ({self.holder or 'free'}, fence {self.fence})"


class EventSource(models.TextChoices):
    SQS = "sqs", "S3 via SQS"
    R2_QUEUE = "r2-queue", "R2 via Cloudflare Queue"
    AZURE_QUEUE = "azure-queue", "Azure Blob via Event Grid and Storage Queue"
    WEBHOOK = "webhook", "Pushed (webhook)"
    CLIENT = "client", "Client complete call"


class EventAction(models.TextChoices):
    CREATED = "created", "Object created"
    DELETED = "deleted", "Object deleted"
    UNKNOWN = "unknown", "Unreadable"


class EventStatus(models.TextChoices):
    MATCHED = "matched", "Matched"
    UNMATCHED = "unmatched", "Unmatched"
    UNPARSEABLE = "unparseable", "Unparseable"


class StorageEvent(models.Model):
    """One distinct storage event (or unreadable message) received, with its delivery count."""

    source = models.CharField(max_length=20, choices=EventSource.choices)
    dedupe_key = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=20, choices=EventStatus.choices)
    action = models.CharField(max_length=20, choices=EventAction.choices)
    event_name = models.CharField(max_length=100, blank=True)
    bucket = models.CharField(max_length=255, blank=True)
    key = models.CharField(max_length=1024, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    etag = models.CharField(max_length=200, blank=True)
    event_time = models.DateTimeField(null=True, blank=True)
    sequencer = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(null=True, blank=True)
    raw_body = models.TextField(blank=True, help_text="The message as received when it was not JSON")
    parse_error = models.TextField(blank=True)
    upload = models.ForeignKey(Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    deliveries = models.PositiveIntegerField(default=1)
    first_received_at = models.DateTimeField(default=timezone.now)
    last_received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-first_received_at"]
        indexes = [
            models.Index(fields=["status", "-first_received_at"], name="event_status_received"),
            models.Index(fields=["-first_received_at"], name="event_received"),
            models.Index(fields=["key"], name="event_key"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name or self.action} {self.key or '(unreadable)'}"


class LinkTrigger(models.TextChoices):
    EVENT = "event", "Storage event"
    COMPLETE = "complete", "Client complete call"
    RETRY = "retry", "Scheduled retry"
    SWEEP = "sweep", "Sweep"
    REPLAY = "replay", "Replay"
    RECONCILE = "reconcile", "Reconciliation"


class LinkOutcome(models.TextChoices):
    LINKED = "linked", "Linked"
    RETRY = "retry", "Will retry"
    FAILED = "failed", "Failed"
    SUPERSEDED = "superseded", "Superseded by a newer upload"
    NOOP = "noop", "Nothing to do"


class LinkAttempt(models.Model):
    """One try at writing an upload's object into its CKAN resource."""

    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="link_attempts")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=20, choices=LinkTrigger.choices)
    triggered_by = models.CharField(max_length=150, blank=True)
    outcome = models.CharField(max_length=20, choices=LinkOutcome.choices)
    ckan_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["upload", "-started_at"], name="attempt_upload_started")]

    def __str__(self) -> str:
        return f"{self.trigger} → {self.outcome}"


class RunState(models.TextChoices):
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"


class ReconcileRun(models.Model):
    """One scan of bucket vs ledger vs CKAN."""

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=RunState.choices, default=RunState.RUNNING)
    fix = models.BooleanField(default=False)
    dry_run = models.BooleanField(default=False)
    triggered_by = models.CharField(max_length=150, blank=True)
    objects_scanned = models.PositiveBigIntegerField(default=0)
    uploads_checked = models.PositiveBigIntegerField(default=0)
    resources_checked = models.PositiveBigIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Reconcile run {self.pk} ({self.state})"


class DiscrepancyKind(models.TextChoices):
    UNEVENTED = "unevented", "Object never evented"
    ORPHAN = "orphan", "Orphan object"
    EXPIRED = "expired", "Expired unused URL"
    PHANTOM = "phantom", "Phantom (object gone)"
    DRIFT = "drift", "Drift (CKAN differs)"
    SUPERSEDED = "superseded", "Superseded object (reclaimable)"
    UNLINKED = "unlinked", "Failed, but the object is in the bucket"
    STRAY_MULTIPART = "stray_multipart", "Multipart upload unknown to the ledger"
    EXPOSURE = "exposure", "Readability differs from the dataset"


class DiscrepancyState(models.TextChoices):
    OPEN = "open", "Open"
    HEALED = "healed", "Healed"
    IGNORED = "ignored", "Ignored"
    RESOLVED = "resolved", "Resolved by itself"


class Discrepancy(models.Model):
    """Something a reconciliation scan found, and what was done about it."""

    run = models.ForeignKey(ReconcileRun, on_delete=models.CASCADE, related_name="discrepancies")
    last_seen_run = models.ForeignKey(ReconcileRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=20, choices=DiscrepancyKind.choices)
    state = models.CharField(max_length=20, choices=DiscrepancyState.choices, default=DiscrepancyState.OPEN)
    fingerprint = models.CharField(max_length=64, help_text="kind + object, to report each finding once")
    upload = models.ForeignKey(Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="discrepancies")
    bucket = models.CharField(max_length=255, blank=True)
    key = models.CharField(max_length=1024, blank=True)
    object_size = models.BigIntegerField(null=True, blank=True)
    object_last_modified = models.DateTimeField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "discrepancies"
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint"], condition=Q(state="open"), name="discrepancy_one_open_per_finding"
            )
        ]
        indexes = [models.Index(fields=["kind", "state", "-created_at"], name="discrepancy_kind_state")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.key}"


class ReconcileSeen(models.Model):
    """An upload id the listing of a running scan showed: the scan's memory, kept in the database.

    The second pass over the ledger asks "was this listed?" here instead of in a Python set, so
    memory stays flat whatever the bucket size. A run deletes its rows when it ends.
    """

    run = models.ForeignKey(ReconcileRun, on_delete=models.CASCADE, related_name="+")
    upload_id = models.UUIDField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "upload_id"], name="reconcile_seen_once")]

    def __str__(self) -> str:
        return f"run {self.run_id} listed {self.upload_id}"


class FailureDigest(models.Model):
    """One failure notice sent (a digest of the uploads that ended failed since the last one)."""

    sent_at = models.DateTimeField(default=timezone.now, db_index=True)
    uploads = models.PositiveIntegerField(default=0)
    emailed = models.BooleanField(default=False)
    webhook_posted = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-sent_at"]

    def __str__(self) -> str:
        return f"failure digest of {self.uploads} upload(s) at {self.sent_at:%Y-%m-%d %H:%M}"


class ConsumerHealth(models.Model):
    """One row per queue consumer (by name): its heartbeat, its last good receive, its errors.

    Written by the consumer processes, read by /healthz and /metrics in the web processes: the
    database is what they already share. Errors are kept as a short reason (an error class or
    code), never a URL or a credential.
    """

    name = models.CharField(max_length=64, unique=True)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True)
    consecutive_errors = models.PositiveIntegerField(default=0)
    receive_errors_total = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "consumer health"

    def __str__(self) -> str:
        return f"{self.name}: {self.consecutive_errors} errors in a row"
