"""Per-key token bucket: bursts up to the per-minute rate, refills continuously."""

from __future__ import annotations

from threadgate.domain.ratelimit import RateLimiter


def test_burst_then_retry_after_then_refill():
    limiter = RateLimiter(per_minute=3)
    assert [limiter.retry_after("k", 0) for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("k", 0) == 20  # one token per 20 s
    assert limiter.retry_after("other", 0) == 0  # keys are independent
    assert limiter.retry_after("k", 19_000) == 1
    assert limiter.retry_after("k", 20_000) == 0
