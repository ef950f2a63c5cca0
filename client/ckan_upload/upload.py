"""One upload from start (or resume) to completion and, when asked, to its link in CKAN."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckan_upload.progress import Meter, Silent
from ckan_upload.retry import Backoff
from ckan_upload.service import Service, ServiceError
from ckan_upload.slices import Cancelled, Part, plan_parts
from ckan_upload.state import StateStore, Target, UploadState, state_key
from ckan_upload.transfer import PartUrls, Sender

# The service's default MULTIPART_THRESHOLD: above it the service plans a multipart upload
# unless told otherwise, and the client then skips hashing by default (a second full read).
DEFAULT_MULTIPART_THRESHOLD = 100 * 1024 * 1024
HASH_CHUNK = 1024 * 1024
DONE_STATES = frozenset({"uploaded", "linked"})
FAILED_STATES = frozenset({"failed", "expired", "aborted", "superseded"})
# complete answers these for a multipart upload whose parts do not match: one repair round helps.
REPAIRABLE = frozenset({"parts_missing", "part_mismatch", "part_size_mismatch"})


class WaitTimeout(Exception):
    """--wait gave up before the upload reached a final state."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(f"upload {status.get('upload_id')} is still {status.get('state')}")
        self.status = status


@dataclass
class UploadRequest:
    """What the command was asked to do."""

    path: Path
    target: Target
    server: str
    token: str
    content_type: str
    jobs: int = 4
    multipart: bool | None = None
    sha256: bool | None = None
    limit_rate: float | None = None
    wait: bool = False
    timeout: float = 600.0
    poll_interval: float = 1.0


@dataclass
class Outcome:
    """What happened, as --json prints it."""

    upload_id: str
    state: str
    resource_id: str
    linked_url: str | None = None
    last_error: str | None = None
    parts_sent: list[int] = field(default_factory=list)
    parts_skipped: list[int] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: float = 0.0
    resumed: bool = False
    # Seconds spent issuing or resuming ("start"), sending, completing and waiting.
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class Plan:
    """The upload being sent: issued now, or found again from the state file."""

    upload_id: str
    resource_id: str
    multipart: bool
    state: str = "issued"
    part_size: int | None = None
    part_count: int | None = None
    upload_url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    part_urls: list[dict[str, Any]] = field(default_factory=list)
    held: dict[int, str] = field(default_factory=dict)
    resumed: bool = False


def file_sha256(path: Path, cancel: threading.Event) -> str:
    """The file's SHA-256, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            if cancel.is_set():
                raise Cancelled
            digest.update(chunk)
    return digest.hexdigest()


class Uploader:
    """Runs one upload request against the service; resumable through the state store."""

    def __init__(
        self,
        request: UploadRequest,
        *,
        cancel: threading.Event,
        store: StateStore,
        meter: Meter | None = None,
        service: Service | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.request = request
        self.cancel = cancel
        self.store = store
        self.meter = meter or Silent()
        self.service = service or Service(request.server, request.token, cancel=cancel)
        self.backoff = backoff or Backoff()
        # The store may take a moment to show a fresh object: not_uploaded right after the PUT is retried.
        self.complete_backoff = Backoff(base=0.5, cap=4, attempts=5)
        self._phases: dict[str, float] = {}
        stat = request.path.stat()
        self.size = stat.st_size
        self.key = state_key(
            server=request.server,
            path=request.path,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            target=request.target,
        )
        self.sender = Sender(
            request.path, cancel=cancel, advance=self.meter.advance, backoff=self.backoff, limit_rate=request.limit_rate
        )

    def run(self) -> Outcome:
        """Issue or resume, send what is missing, complete, and wait when asked."""
        started = time.monotonic()
        self.store.prune()
        saved = self.store.load(self.key)
        with self._phase("start"):
            plan = self._resume(saved) if saved else None
            if plan is None:
                plan = self._issue(saved.resource_id if saved else None)
        outcome = Outcome(
            upload_id=plan.upload_id, state=plan.state, resource_id=plan.resource_id, resumed=plan.resumed
        )
        if plan.state not in DONE_STATES:
            answer = self._send_and_complete(plan, outcome)
            outcome.state = str(answer.get("state") or "uploaded")
        if self.request.wait:
            with self._phase("wait"):
                status = self._wait(plan.upload_id)
        elif outcome.state == "linked":
            status = self.service.status(plan.upload_id)
        else:
            status = {"state": outcome.state}
        outcome.state = str(status.get("state") or outcome.state)
        outcome.linked_url = status.get("linked_url")
        outcome.last_error = status.get("last_error")
        # Done (or finally failed): a rerun would start a new upload, not continue this one.
        self.store.remove(self.key)
        outcome.seconds = round(time.monotonic() - started, 3)
        outcome.phases = {name: round(seconds, 3) for name, seconds in self._phases.items()}
        return outcome

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Add the block's duration to the phase ``name`` (reported in --json)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self._phases[name] = self._phases.get(name, 0.0) + time.monotonic() - started

    def _wants_sha256(self) -> bool:
        if self.request.sha256 is not None:
            return self.request.sha256
        if self.request.multipart is not None:
            return not self.request.multipart
        return self.size <= DEFAULT_MULTIPART_THRESHOLD

    def _issue(self, resource_id: str | None) -> Plan:
        request = self.request
        payload: dict[str, Any] = {
            "filename": request.path.name,
            "content_type": request.content_type,
            "size": self.size,
        }
        if request.multipart is not None:
            payload["multipart"] = request.multipart
        if self._wants_sha256():
            payload["sha256"] = file_sha256(request.path, self.cancel)
        resource_id = resource_id or request.target.resource_id
        if resource_id:
            upload = self.service.issue({"resource_id": resource_id, **payload})
        else:
            answer = self.service.create_resource(
                {"package_id": request.target.dataset_id, "name": request.target.name, **payload}
            )
            upload, resource_id = answer["upload"], str(answer["resource"]["id"])
        plan = Plan(
            upload_id=str(upload["upload_id"]),
            resource_id=resource_id,
            multipart=bool(upload.get("multipart")),
            part_size=upload.get("part_size"),
            part_count=upload.get("part_count"),
            upload_url=upload.get("upload_url"),
            headers=dict(upload.get("headers") or {}),
            part_urls=list(upload.get("parts") or []),
        )
        self.store.save(
            self.key,
            UploadState(
                upload_id=plan.upload_id,
                resource_id=plan.resource_id,
                multipart=plan.multipart,
                part_size=plan.part_size,
                part_count=plan.part_count,
                created_at=time.time(),
            ),
        )
        return plan

    def _resume(self, saved: UploadState) -> Plan | None:
        """The saved upload if it can still be continued (or is already done); None to start anew."""
        try:
            status = self.service.status(saved.upload_id)
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise
        state = str(status.get("state"))
        plan = Plan(
            upload_id=saved.upload_id,
            resource_id=saved.resource_id,
            multipart=saved.multipart,
            state=state,
            part_size=status.get("part_size") or saved.part_size,
            part_count=status.get("part_count") or saved.part_count,
            resumed=True,
        )
        if state in DONE_STATES:
            return plan
        if state != "issued":
            return None
        if plan.multipart:
            try:
                plan.held = self._held_parts(plan)
            except ServiceError as exc:
                # The store dropped the multipart upload (its lifecycle, or an abort): start anew.
                if exc.code == "upload_gone" or exc.status == 404:
                    return None
                raise
            return plan
        # A single PUT cannot be continued, but it may have landed just before the crash.
        try:
            plan.state = str(self.service.complete(plan.upload_id).get("state") or "uploaded")
            return plan
        except ServiceError as exc:
            if exc.status != 409:
                raise
        with contextlib.suppress(ServiceError):
            self.service.abort(plan.upload_id)
        return None

    def _parts(self, plan: Plan) -> list[Part]:
        assert plan.part_size is not None and plan.part_count is not None
        return plan_parts(self.size, int(plan.part_size), int(plan.part_count))

    def _held_parts(self, plan: Plan) -> dict[int, str]:
        """The parts the bucket holds with the right size, and their ETags."""
        expected = {part.number: part.length for part in self._parts(plan)}
        answer = self.service.parts_held(plan.upload_id)
        return {
            int(held["part_number"]): str(held["etag"])
            for held in answer.get("parts", [])
            if expected.get(int(held["part_number"])) == int(held["size"])
        }

    def _send_and_complete(self, plan: Plan, outcome: Outcome) -> dict[str, Any]:
        if not plan.multipart:
            return self._send_single(plan, outcome)
        outcome.parts_skipped = sorted(plan.held)
        parts = self._parts(plan)
        lengths = {part.number: part.length for part in parts}
        etags = dict(plan.held)
        self.meter.start("uploading", total=self.size, completed=sum(lengths[n] for n in plan.held))
        try:
            self._send_missing(plan, parts, etags, outcome)
            try:
                return self._complete_parts(plan, etags)
            except ServiceError as exc:
                if exc.status != 409 or exc.code not in REPAIRABLE:
                    raise
            # The bucket disagrees with what we sent: trust its own list and send the rest again.
            etags = self._held_parts(plan)
            self._send_missing(plan, parts, etags, outcome)
            return self._complete_parts(plan, etags)
        finally:
            self.meter.stop()

    def _complete_parts(self, plan: Plan, etags: dict[int, str]) -> dict[str, Any]:
        with self._phase("complete"):
            return self.service.complete(plan.upload_id, [{"part_number": n, "etag": etags[n]} for n in sorted(etags)])

    def _send_missing(self, plan: Plan, parts: list[Part], etags: dict[int, str], outcome: Outcome) -> None:
        missing = [part for part in parts if part.number not in etags]
        if not missing:
            return
        urls = PartUrls(self.service, plan.upload_id, plan.part_urls, [part.number for part in missing])
        lock = threading.Lock()

        def done(part: Part, etag: str) -> None:
            with lock:
                etags[part.number] = etag
                outcome.parts_sent.append(part.number)
                outcome.bytes_sent += part.length

        with self._phase("send"):
            self.sender.send_parts(missing, urls, self.request.jobs, done)
        outcome.parts_sent = sorted(set(outcome.parts_sent))

    def _send_single(self, plan: Plan, outcome: Outcome) -> dict[str, Any]:
        assert plan.upload_url is not None
        target = {"url": plan.upload_url, "headers": plan.headers}
        self.meter.start("uploading", total=self.size, completed=0)
        try:
            with self._phase("send"):
                self.sender.send(Part(number=1, offset=0, length=self.size), lambda: target, None)
        finally:
            self.meter.stop()
        outcome.parts_sent, outcome.bytes_sent = [1], self.size
        backoff, attempt = self.complete_backoff, 0
        while True:
            try:
                with self._phase("complete"):
                    return self.service.complete(plan.upload_id)
            except ServiceError as exc:
                if exc.status != 409 or exc.code != "not_uploaded" or attempt + 1 >= backoff.attempts:
                    raise
            with self._phase("complete"):
                backoff.sleep(attempt, self.cancel)
            attempt += 1

    def _wait(self, upload_id: str) -> dict[str, Any]:
        """Poll the status until the upload is linked or finally failed."""
        deadline = time.monotonic() + self.request.timeout
        while True:
            status = self.service.status(upload_id)
            if status.get("state") == "linked" or status.get("state") in FAILED_STATES:
                return status
            if time.monotonic() >= deadline:
                raise WaitTimeout(status)
            if self.cancel.wait(self.request.poll_interval):
                raise Cancelled
