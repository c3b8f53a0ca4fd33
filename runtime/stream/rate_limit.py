"""Token buckets: a sustained rate with a burst allowance (per connection, and per client in ``runtime.quotas``)."""

from __future__ import annotations

import time


class TokenBucket:
    """Allows ``rate`` events per second on average and up to ``burst`` at once.

    ``allow()`` takes one token if there is one. Time comes from ``clock`` (seconds,
    monotonic) so tests can drive it.
    """

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"TokenBucket: rate must be > 0 and burst >= 1, got {rate} and {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._last_complaint = -1e9

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def allow(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def ready(self) -> bool:
        """Would :meth:`allow` succeed now? (takes nothing: check several buckets before taking from any)"""
        self._refill()
        return self._tokens >= 1.0

    def full(self) -> bool:
        """Is the burst allowance whole again (the bucket remembers nothing a fresh one would not)?"""
        self._refill()
        return self._tokens >= self.burst

    def seconds_to_token(self) -> float:
        """How long until ``allow()`` can succeed (0 if it can now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def should_complain(self, interval: float = 1.0) -> bool:
        """True at most once per ``interval`` seconds: report drops without flooding back."""
        now = self._clock()
        if now - self._last_complaint >= interval:
            self._last_complaint = now
            return True
        return False


class BucketsByKey:
    """One :class:`TokenBucket` per key (a client address), at most ``max_keys`` of them:
    beyond that the least recently used goes (a full bucket is what a new key gets anyway,
    so forgetting costs an attacker's victims nothing and the table stays bounded)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000, clock=time.monotonic) -> None:
        self.rate, self.burst, self.max_keys, self._clock = rate, burst, max_keys, clock
        self._buckets: dict[str, TokenBucket] = {}

    def get(self, key: str) -> TokenBucket:
        bucket = self._buckets.pop(key, None)  # re-inserted last: dicts keep insertion order
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self._clock)
            if len(self._buckets) >= self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket
        return bucket

    def find(self, key: str) -> TokenBucket | None:
        """The key's bucket if it has one (nothing is created)."""
        return self._buckets.get(key)
