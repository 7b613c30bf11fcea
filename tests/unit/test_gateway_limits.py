"""Per-key requests/minute and tokens/minute limits."""

from __future__ import annotations

import pytest

from llmserve.gateway.auth import ApiKey
from llmserve.gateway.limits import RateLimiter


def key(rpm: int = 0, tpm: int = 0, name: str = "team") -> ApiKey:
    return ApiKey(name=name, digest=b"x", requests_per_minute=rpm, tokens_per_minute=tpm)


def test_requests_beyond_the_per_minute_limit_are_refused_until_the_bucket_refills() -> None:
    limiter, k = RateLimiter(), key(rpm=3)
    assert [limiter.admit(k, now=100.0) for _ in range(3)] == [None, None, None]
    refusal = limiter.admit(k, now=100.0)
    assert refusal is not None and refusal.limit == "requests_per_minute"
    assert refusal.retry_after_seconds == pytest.approx(20.0)  # one request per 20 s refills
    assert limiter.admit(k, now=120.5) is None


def test_tokens_are_debited_from_responses_and_refuse_once_the_budget_is_spent() -> None:
    limiter, k = RateLimiter(), key(tpm=600)
    assert limiter.admit(k, now=0.0) is None
    limiter.record_tokens(k, now=0.0, tokens=900)  # one big answer overdraws the budget
    refusal = limiter.admit(k, now=1.0)
    assert refusal is not None and refusal.limit == "tokens_per_minute"
    assert refusal.retry_after_seconds == pytest.approx(29.0, abs=0.1)  # -300 + 10/s*1s, back above 0 at 30s
    assert limiter.admit(k, now=30.5) is None


def test_keys_without_limits_are_never_refused() -> None:
    limiter, k = RateLimiter(), key()
    limiter.record_tokens(k, 0.0, 10**9)
    assert all(limiter.admit(k, 0.0) is None for _ in range(1000))


def test_limits_are_tracked_per_key_name() -> None:
    limiter = RateLimiter()
    assert limiter.admit(key(rpm=1, name="a"), 0.0) is None
    assert limiter.admit(key(rpm=1, name="a"), 0.0) is not None
    assert limiter.admit(key(rpm=1, name="b"), 0.0) is None


def test_lowering_a_limit_takes_effect_without_granting_extra_budget() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.admit(key(rpm=10), 0.0)
    assert limiter.admit(key(rpm=2), 0.0) is None  # 5 left, capped to 2
    assert limiter.admit(key(rpm=2), 0.0) is None
    assert limiter.admit(key(rpm=2), 0.0) is not None
