"""A token bucket per key: `rate` requests per minute, bursts up to one minute's worth."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TokenBucket:
    per_minute: int
    tokens: float = -1.0
    updated_ms: int = 0

    def take(self, now_ms: int) -> int:
        """0 if the request may go, else the seconds to wait before one may (Retry-After)."""
        if self.tokens < 0:
            self.tokens, self.updated_ms = float(self.per_minute), now_ms
        refill = (now_ms - self.updated_ms) * self.per_minute / 60_000
        self.tokens = min(float(self.per_minute), self.tokens + refill)
        self.updated_ms = now_ms
        if self.tokens >= 1:
            self.tokens -= 1
            return 0
        return max(1, math.ceil(round((1 - self.tokens) * 60 / self.per_minute, 6)))  # round: float dust


class RateLimiter:
    def __init__(self, per_minute: int, max_keys: int = 100_000):
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, key_id: str, now_ms: int) -> int:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:  # bounded memory: forget the oldest half
                for stale in list(self._buckets)[: self.max_keys // 2]:
                    del self._buckets[stale]
            bucket = self._buckets[key_id] = TokenBucket(self.per_minute)
        return bucket.take(now_ms)
