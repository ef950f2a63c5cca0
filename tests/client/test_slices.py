from __future__ import annotations

import itertools
import threading
import time

import pytest

from ckan_upload.slices import READ_CHUNK, Cancelled, FileSlice, Part, RateLimiter, plan_parts

MiB = 1024 * 1024


def test_it_plans_equal_parts_and_a_shorter_last_one():
    parts = plan_parts(16 * MiB, 5 * MiB, 4)
    assert parts == [
        Part(1, 0, 5 * MiB),
        Part(2, 5 * MiB, 5 * MiB),
        Part(3, 10 * MiB, 5 * MiB),
        Part(4, 15 * MiB, MiB),
    ]


def test_it_plans_an_exact_multiple_without_an_empty_last_part():
    parts = plan_parts(10 * MiB, 5 * MiB, 2)
    assert [part.length for part in parts] == [5 * MiB, 5 * MiB]


def test_it_plans_one_empty_part_for_an_empty_file():
    assert plan_parts(0, 5 * MiB, 1) == [Part(1, 0, 0)]


def test_the_parts_cover_every_byte_exactly_once():
    size, part_size = 5 * MiB * 10_000 - 7, 5 * MiB
    parts = plan_parts(size, part_size, 10_000)
    assert sum(part.length for part in parts) == size
    assert all(a.offset + a.length == b.offset for a, b in itertools.pairwise(parts))


@pytest.mark.parametrize(("size", "part_size", "count"), [(16, 5, 3), (16, 5, 5), (16, 0, 1), (16, 5, 0)])
def test_it_refuses_a_plan_that_does_not_fit_the_file(size, part_size, count):
    with pytest.raises(ValueError):
        plan_parts(size, part_size, count)


def test_a_file_slice_reads_only_its_range_and_in_bounded_chunks(tmp_path):
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 4096  # 1 MiB
    path.write_bytes(data)
    seen: list[int] = []
    with FileSlice(path, 1000, 600_000, cancel=threading.Event(), on_read=seen.append) as body:
        assert len(body) == 600_000
        chunks = list(body)
    assert b"".join(chunks) == data[1000:601_000]
    assert max(len(chunk) for chunk in chunks) <= READ_CHUNK
    assert sum(seen) == 600_000


def test_a_file_slice_stops_when_cancelled(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 100)
    cancel = threading.Event()
    with FileSlice(path, 0, 100, cancel=cancel) as body:
        cancel.set()
        with pytest.raises(Cancelled):
            next(iter(body))


def test_the_rate_limiter_keeps_all_threads_together_under_the_rate():
    limiter = RateLimiter(1_000_000, threading.Event())
    started = time.monotonic()

    def take() -> None:
        for _ in range(5):
            limiter.acquire(20_000)

    threads = [threading.Thread(target=take) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 300 kB at 1 MB/s: at least 0.3 s whatever the number of threads.
    assert time.monotonic() - started >= 0.29


def test_the_rate_limiter_gives_up_its_wait_when_cancelled():
    cancel = threading.Event()
    limiter = RateLimiter(10, cancel)
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        limiter.acquire(1000)  # would be 100 s
    assert time.monotonic() - started < 5
