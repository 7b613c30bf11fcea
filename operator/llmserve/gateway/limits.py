"""Per-key requests/minute and tokens/minute limits as token buckets (pure: the caller passes the clock)."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.gateway.auth import ApiKey


@dataclass
class TokenBucket:
    """Holds up to `capacity` units, refilled at capacity per minute; may go negative after a debit."""

    capacity: float
    level: float
    updated: float

    @property
    def refill_per_second(self) -> float:
        return self.capacity / 60.0

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.refill_per_second)
        self.updated = now

    def seconds_until(self, now: float, amount: float) -> float:
        """0 when `amount` is available now, else how long until it will be."""
        self._refill(now)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.refill_per_second

    def take(self, now: float, amount: float) -> None:
        self._refill(now)
        self.level -= amount


@dataclass(frozen=True)
class Refusal:
    limit: str  # requests_per_minute | tokens_per_minute
    retry_after_seconds: float


class RateLimiter:
    """Buckets per key name, so a rotated key (same name, new secret) keeps its budget.

    Requests are counted on admission. Tokens are only known from the response, so they are debited
    afterwards: a key over its token budget is refused until the bucket refills above zero, which
    keeps the average at the limit without guessing a request's size up front.
    """

    def __init__(self) -> None:
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    @staticmethod
    def _bucket(store: dict[str, TokenBucket], name: str, capacity: int, now: float) -> TokenBucket:
        bucket = store.get(name)
        if bucket is None or bucket.capacity != capacity:
            level = capacity if bucket is None else min(bucket.level, capacity)
            bucket = store[name] = TokenBucket(float(capacity), float(level), now)
        return bucket

    def admit(self, key: ApiKey, now: float) -> Refusal | None:
        """Counts one request against the key, or says which limit refuses it and for how long."""
        tokens = None
        if key.tokens_per_minute:
            tokens = self._bucket(self._tokens, key.name, key.tokens_per_minute, now)
            # Any positive balance admits; the debit comes with the response.
            wait = tokens.seconds_until(now, 1e-9)
            if wait > 0:
                return Refusal("tokens_per_minute", wait)
        if key.requests_per_minute:
            requests = self._bucket(self._requests, key.name, key.requests_per_minute, now)
            wait = requests.seconds_until(now, 1.0)
            if wait > 0:
                return Refusal("requests_per_minute", wait)
            requests.take(now, 1.0)
        return None

    def token_balance(self, key: ApiKey, now: float) -> float | None:
        """Tokens the key may still use now; None when it has no tokens-per-minute limit."""
        if not key.tokens_per_minute:
            return None
        bucket = self._bucket(self._tokens, key.name, key.tokens_per_minute, now)
        bucket.seconds_until(now, 0.0)  # refills to now
        return bucket.level

    def record_tokens(self, key: ApiKey, now: float, tokens: int) -> None:
        if key.tokens_per_minute and tokens > 0:
            self._bucket(self._tokens, key.name, key.tokens_per_minute, now).take(now, float(tokens))
