"""Sending bytes to presigned URLs: one part with retries, and many parts in parallel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import requests

from ckan_upload.retry import Backoff, is_retryable_status
from ckan_upload.service import Service
from ckan_upload.slices import FileSlice, Part, RateLimiter

PUT_TIMEOUT = (10, 300)
URL_PAGE = 100
MAX_URL_REFRESHES = 3
# A URL this close to its expiry is refreshed before use rather than failing mid-part.
EXPIRY_MARGIN = timedelta(seconds=60)

Advance = Callable[[int], None]


class TransferError(Exception):
    """A part (or the single PUT) could not be sent after its retries."""


def _expires_soon(info: dict[str, Any]) -> bool:
    try:
        expires = datetime.fromisoformat(str(info["expires_at"]))
    except (KeyError, ValueError):
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires - datetime.now(UTC) < EXPIRY_MARGIN


class PartUrls:
    """Presigned part URLs, fetched a page ahead of need (they are short-lived) and again after a 403."""

    def __init__(self, service: Service, upload_id: str, known: Iterable[dict[str, Any]], wanted: list[int]) -> None:
        self._service = service
        self._upload_id = upload_id
        self._wanted = wanted
        self._position = {number: index for index, number in enumerate(wanted)}
        self._urls = {int(info["part_number"]): info for info in known}
        self._lock = threading.Lock()

    def get(self, number: int) -> dict[str, Any]:
        """The URL and headers for part ``number``."""
        with self._lock:
            info = self._urls.get(number)
            if info is not None and not _expires_soon(info):
                return info
            start = self._position.get(number, 0)
            page = [n for n in self._wanted[start : start + URL_PAGE] if n not in self._urls or n == number]
            self._fetch(page or [number])
            return self._urls[number]

    def refresh(self, number: int) -> dict[str, Any]:
        """A fresh URL for part ``number`` (its old one was refused)."""
        with self._lock:
            self._fetch([number])
            return self._urls[number]

    def _fetch(self, numbers: list[int]) -> None:
        for info in self._service.part_urls(self._upload_id, numbers):
            self._urls[int(info["part_number"])] = info


class Sender:
    """Sends byte ranges of one file with retries, paced by an optional shared rate limit."""

    def __init__(
        self,
        path: Path,
        *,
        cancel: threading.Event,
        advance: Advance,
        backoff: Backoff | None = None,
        limit_rate: float | None = None,
    ) -> None:
        self.path = path
        self.cancel = cancel
        self.advance = advance
        self.backoff = backoff or Backoff()
        self.limiter = RateLimiter(limit_rate, cancel) if limit_rate else None
        self._local = threading.local()

    def _session(self) -> requests.Session:
        # One session per thread: each keeps its own connection to the store.
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def send(self, part: Part, url: Callable[[], dict[str, Any]], refresh: Callable[[], dict[str, Any]] | None) -> str:
        """PUT the part to its URL and return the store's ETag; retry with backoff, refresh the URL after a 403."""
        info = url()
        attempt = refreshes = 0
        while True:
            sent = 0

            def counted(amount: int) -> None:
                nonlocal sent
                sent += amount
                self.advance(amount)

            try:
                with FileSlice(
                    self.path, part.offset, part.length, cancel=self.cancel, on_read=counted, limiter=self.limiter
                ) as body:
                    response = self._session().put(
                        info["url"], data=body if part.length else b"", headers=info["headers"], timeout=PUT_TIMEOUT
                    )
            except requests.RequestException as exc:
                problem = f"part {part.number}: {type(exc).__name__}"
            else:
                if response.status_code == 200:
                    etag = response.headers.get("ETag")
                    if etag:
                        return etag
                    problem = f"part {part.number}: the store sent no ETag"
                elif response.status_code == 403 and refresh is not None and refreshes < MAX_URL_REFRESHES:
                    # An expired (or otherwise refused) URL: a fresh one, straight away.
                    self.advance(-sent)
                    refreshes += 1
                    info = refresh()
                    continue
                elif is_retryable_status(response.status_code, response.text):
                    problem = f"part {part.number}: HTTP {response.status_code}"
                else:
                    self.advance(-sent)
                    raise TransferError(f"part {part.number}: the store refused it (HTTP {response.status_code})")
            self.advance(-sent)
            if attempt + 1 >= self.backoff.attempts:
                raise TransferError(f"{problem}, after {self.backoff.attempts} attempts")
            self.backoff.sleep(attempt, self.cancel)
            attempt += 1

    def send_parts(self, parts: list[Part], urls: PartUrls, jobs: int, on_done: Callable[[Part, str], None]) -> None:
        """Send the parts, ``jobs`` at a time; the first failure (or Ctrl-C) stops the others."""
        executor = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="part")
        futures: dict[Future[str], Part] = {}
        try:
            for part in parts:
                future = executor.submit(
                    self.send, part, partial(urls.get, part.number), partial(urls.refresh, part.number)
                )
                futures[future] = part
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                for future in done:
                    on_done(futures[future], future.result())
        except KeyboardInterrupt:
            # Ctrl-C: do not wait for a thread blocked on the network; the command exits at once.
            self.cancel.set()
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        except BaseException:
            # A part failed: the others stop at their next chunk, and none is left sending behind us.
            self.cancel.set()
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
