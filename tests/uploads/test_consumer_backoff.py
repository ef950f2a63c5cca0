from __future__ import annotations

from uploads.consumers.backoff import Backoff


def test_it_doubles_the_wait_up_to_the_cap_with_jitter_in_the_upper_half():
    lowest = Backoff(base=1, cap=8, rng=lambda: 0.0)
    highest = Backoff(base=1, cap=8, rng=lambda: 0.999999)
    assert [lowest.failed() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert [round(highest.failed(), 3) for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_it_starts_again_from_the_base_after_a_success():
    backoff = Backoff(base=2, cap=60, rng=lambda: 0.0)
    backoff.failed(), backoff.failed(), backoff.failed()
    backoff.reset()
    assert (backoff.failures, backoff.failed()) == (0, 1.0)


def test_it_does_not_overflow_after_a_very_long_outage():
    backoff = Backoff(base=1, cap=30, failures=10_000, rng=lambda: 0.5)
    assert backoff.failed() == 22.5
