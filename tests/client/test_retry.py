from __future__ import annotations

import random
import threading

import pytest

from ckan_upload.retry import Backoff, is_retryable_status
from ckan_upload.slices import Cancelled


def test_each_delay_is_jittered_under_an_exponential_ceiling_with_a_cap():
    backoff, rng = Backoff(base=0.5, cap=30), random.Random(7)
    for attempt in range(12):
        ceiling = min(30, 0.5 * 2**attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        # Full jitter: spread over the whole window, not bunched at its top.
        assert min(delays) < ceiling * 0.2 and max(delays) > ceiling * 0.8


def test_the_ceiling_doubles_until_the_cap():
    backoff, rng = Backoff(base=1, cap=8), random.Random(1)
    tops = [max(backoff.delay(n, rng) for _ in range(500)) for n in range(6)]
    assert tops[0] <= 1 < tops[1] <= 2 < tops[2] <= 4 < tops[3] <= 8
    assert tops[4] <= 8 and tops[5] <= 8


def test_a_backoff_sleep_is_cut_short_by_the_cancel_event():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        Backoff(base=100, cap=100).sleep(3, cancel)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_it_retries_server_trouble(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413])
def test_it_does_not_retry_a_refusal(status):
    assert not is_retryable_status(status)


def test_it_retries_s3s_request_timeout_even_though_it_is_a_400():
    assert is_retryable_status(400, "<Error><Code>RequestTimeout</Code></Error>")
