"""Which bytes each part holds, and a file slice that streams them without holding them in memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 256 * 1024


class Cancelled(Exception):
    """The upload was interrupted (Ctrl-C): stop sending."""


@dataclass(frozen=True)
class Part:
    """One part of a multipart upload: its number (from 1) and its byte range in the file."""

    number: int
    offset: int
    length: int


def plan_parts(size: int, part_size: int, part_count: int) -> list[Part]:
    """The parts of a file of ``size`` bytes as the service planned them; refuses a plan that does not fit."""
    if part_size <= 0 or part_count <= 0:
        raise ValueError(f"the service planned {part_count} parts of {part_size} bytes")
    expected = max(1, -(-size // part_size))
    if part_count != expected:
        raise ValueError(f"{part_count} parts of {part_size} bytes cannot hold {size} bytes (expected {expected})")
    return [
        Part(number=n, offset=(n - 1) * part_size, length=min(part_size, size - (n - 1) * part_size))
        for n in range(1, part_count + 1)
    ]


class RateLimiter:
    """Paces reads so that all threads together stay under ``rate`` bytes per second."""

    def __init__(self, rate: float, cancel: threading.Event) -> None:
        self.rate = rate
        self._cancel = cancel
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self, amount: int) -> None:
        """Wait until ``amount`` more bytes may be sent."""
        # Each read reserves the next window of the shared budget and waits for its end.
        with self._lock:
            now = time.monotonic()
            end = max(now, self._next) + amount / self.rate
            self._next = end
        if self._cancel.wait(max(0.0, end - now)):
            raise Cancelled


class FileSlice:
    """``length`` bytes of a file from ``offset``, read lazily: a body requests streams with its Content-Length."""

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int,
        *,
        cancel: threading.Event,
        on_read: Callable[[int], None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._file = open(path, "rb")
        self._file.seek(offset)
        self._remaining = length
        self._length = length
        self._cancel = cancel
        self._on_read = on_read
        self._limiter = limiter

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        """The slice's bytes in chunks of at most READ_CHUNK.

        Only iteration, no ``read``: requests then hands the chunks to the socket as they are,
        instead of urllib3 reading a file-like body 16 KiB at a time.
        """
        while self._remaining > 0:
            if self._cancel.is_set():
                raise Cancelled
            wanted = min(self._remaining, READ_CHUNK)
            if self._limiter is not None:
                self._limiter.acquire(wanted)
            data = self._file.read(wanted)
            if not data:
                raise OSError(f"{self._file.name} is shorter than expected: was it changed during the upload?")
            self._remaining -= len(data)
            if self._on_read is not None:
                self._on_read(len(data))
            yield data

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __enter__(self) -> FileSlice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
