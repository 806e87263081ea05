"""Rate limits and live-reader limits (`ds_trio.limits`)."""

from __future__ import annotations

import pytest

from ds_trio.limits import LiveReaderLimit, RateLimiter
from ds_trio.protocol.errors import Overloaded, TooManyRequests


def test_a_bucket_allows_its_burst_then_refills_at_the_rate() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    for _ in range(3):
        limiter.check("a", 100.0)
    with pytest.raises(TooManyRequests) as caught:
        limiter.check("a", 100.0)
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "1"
    limiter.check("b", 100.0)  # buckets are per client
    limiter.check("a", 100.5)  # half a second at 2/s: one more
    with pytest.raises(TooManyRequests):
        limiter.check("a", 100.5)
    limiter.check("a", 200.0)  # refills, but never beyond the burst
    limiter.check("a", 200.0)
    limiter.check("a", 200.0)
    with pytest.raises(TooManyRequests):
        limiter.check("a", 200.0)


def test_refused_requests_do_not_dig_the_bucket_deeper() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    limiter.check("a", 0.0)
    for _ in range(50):
        with pytest.raises(TooManyRequests):
            limiter.check("a", 0.0)
    limiter.check("a", 1.0)


def test_retry_after_rounds_up_for_slow_rates() -> None:
    limiter = RateLimiter(rate=0.1, burst=1)
    limiter.check("a", 0.0)
    with pytest.raises(TooManyRequests) as caught:
        limiter.check("a", 1.0)
    assert caught.value.headers["Retry-After"] == "9"


def test_the_least_recently_seen_clients_are_forgotten() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_clients=3)
    for client in "abcd":
        limiter.check(client, 0.0)
    assert len(limiter) == 3
    limiter.check("a", 0.0)  # forgotten, so full again
    with pytest.raises(TooManyRequests):
        limiter.check("d", 0.0)


def test_live_readers_are_limited_per_client_and_in_total() -> None:
    limit = LiveReaderLimit(total=3, per_client=2)
    with limit.hold("a"), limit.hold("a"):
        with pytest.raises(TooManyRequests):
            limit.check("a")
        with limit.hold("b"):
            assert limit.held() == 3 and limit.held("a") == 2
            with pytest.raises(Overloaded) as caught:
                limit.check("c")
            assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "1"
        limit.check("c")
    assert limit.held() == 0 and limit.held("a") == 0


def test_a_failing_reader_gives_its_place_back() -> None:
    limit = LiveReaderLimit(total=1, per_client=1)
    with pytest.raises(RuntimeError), limit.hold("a"):
        raise RuntimeError
    with limit.hold("a"):
        assert limit.held("a") == 1
