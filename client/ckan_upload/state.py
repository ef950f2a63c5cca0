"""The small resume file: which upload a rerun of the same command continues."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# A multipart upload lives at most 7 days on the service (MULTIPART_MAX_AGE); older files are useless.
STALE_AFTER_SECONDS = 8 * 24 * 3600


def state_dir() -> Path:
    """$XDG_CACHE_HOME/ckan-upload, or ~/.cache/ckan-upload."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ckan-upload"


@dataclass(frozen=True)
class Target:
    """What the upload is for: an existing resource, or a new one in a dataset."""

    resource_id: str | None = None
    dataset_id: str | None = None
    name: str | None = None

    def describe(self) -> str:
        """A stable text naming the target, part of the resume key."""
        if self.resource_id:
            return f"resource:{self.resource_id}"
        return f"dataset:{self.dataset_id}:name:{self.name}"


@dataclass
class UploadState:
    """What a rerun needs: never a token or a presigned URL."""

    upload_id: str
    resource_id: str
    multipart: bool
    part_size: int | None
    part_count: int | None
    created_at: float


def state_key(*, server: str, path: Path, size: int, mtime_ns: int, target: Target) -> str:
    """The resume key: the same server, file (path, size, mtime) and target give the same key."""
    identity = json.dumps([server.rstrip("/"), str(path.resolve()), size, mtime_ns, target.describe()])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


class StateStore:
    """State files in one directory, one per key, written atomically and readable only by their owner."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str) -> UploadState | None:
        """The saved state, or None when absent or unreadable (a broken file just means: start anew)."""
        try:
            data: dict[str, Any] = json.loads(self._path(key).read_text())
            return UploadState(**data)
        except (OSError, ValueError, TypeError):
            return None

    def save(self, key: str, state: UploadState) -> None:
        """Write the state (a temporary file renamed over the old one, so a crash never leaves half a file)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self._path(key)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(state), handle)
        os.replace(temporary, target)

    def remove(self, key: str) -> None:
        """Forget the state (the upload finished, or cannot be continued)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def prune(self, now: float | None = None) -> None:
        """Delete state files older than any upload the service would still continue."""
        cutoff = (now or time.time()) - STALE_AFTER_SECONDS
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.glob("*.json"):
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
