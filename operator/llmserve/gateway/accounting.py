"""What a request costs its API key and what it leaves behind: its limits checked and tokens reserved
on the way in; metrics, the tokens charged and the access-log line on the way out."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from llmserve.gateway.auth import ApiKey
from llmserve.gateway.errors import GatewayError
from llmserve.gateway.limits import RateLimiter
from llmserve.gateway.metering import TokenReservations
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.outcome import Outcome

access_log = logging.getLogger("llmserve.gateway.access")

UNKNOWN_MODEL = "_unknown"  # metric label for refused requests, so callers cannot grow label sets


class RequestAccounting:
    """One per gateway: the keys' rate limits, their in-flight token reservations and the request metrics."""

    def __init__(self, limiter: RateLimiter, metrics: GatewayMetrics, access_log_enabled: bool) -> None:
        self.limiter, self.metrics, self.access_log_enabled = limiter, metrics, access_log_enabled
        self.reservations = TokenReservations()

    def admit(self, key: ApiKey, now: float, tokens: float = 0.0) -> float:
        """Checks the key's limits and reserves `tokens` of its tokens-per-minute budget while the
        request is in flight, so concurrent requests cannot overdraw it; returns what was reserved."""
        balance = self.limiter.token_balance(key, now)
        refusal = self.reservations.admit(key, balance, tokens)
        reserved = tokens if refusal is None and balance is not None else 0.0
        if refusal is None:
            refusal = self.limiter.admit(key, now)
            if refusal is not None and reserved:
                self.reservations.release(key, reserved)
        if refusal is not None:
            self.metrics.rate_limited.labels(key.name, refusal.limit).inc()
            raise GatewayError(
                429,
                f"Rate limit reached for API key {key.name!r}: {refusal.limit.replace('_', ' ')}. "
                f"Retry in {refusal.retry_after_seconds:.1f}s.",
                code="rate_limit_exceeded",
                retry_after_seconds=refusal.retry_after_seconds,
            )
        return reserved

    def record(
        self,
        request: web.Request,
        key: ApiKey,
        model: str,
        stream: bool,
        started: float,
        outcome: Outcome,
        reserved: float = 0.0,
    ) -> None:
        """After the response: the reservation released, the tokens charged, metrics and the access log."""
        if reserved:
            self.reservations.release(key, reserved)
            if outcome.settle_usage() is None and outcome.status == 200:
                # Served, but the backend's usage was missing or not believable: the reservation is
                # what the key is charged, so a broken backend cannot make answers free.
                self.limiter.record_tokens(key, time.monotonic(), int(reserved))
        elapsed = time.monotonic() - started
        known = model != UNKNOWN_MODEL
        status = str(outcome.status or 500)
        self.metrics.requests_of(model, key.name, status).inc()
        if outcome.error_reason:
            self.metrics.errors_of(model, outcome.error_reason).inc()
        if known:
            self.metrics.latency_of(model, "true" if stream else "false").observe(elapsed)
        if stream and outcome.first_byte_seconds is not None:
            self.metrics.ttft_of(model).observe(outcome.first_byte_seconds)
        usage = outcome.settle_usage()
        if usage is not None:
            self.metrics.tokens_of(key.name, model, "prompt").inc(usage.prompt_tokens)
            self.metrics.tokens_of(key.name, model, "completion").inc(usage.completion_tokens)
            self.limiter.record_tokens(key, time.monotonic(), usage.total_tokens)
        if self.access_log_enabled:
            access_log.info(
                "event=request method=%s path=%s model=%s key=%s status=%s stream=%s backend=%s attempts=%d "
                "duration_ms=%.1f ttft_ms=%s prompt_tokens=%s completion_tokens=%s error=%s",
                request.method, _route_of(request), model, key.name, status, stream, outcome.backend or "-",
                outcome.attempts, elapsed * 1000,
                "-" if outcome.first_byte_seconds is None else f"{outcome.first_byte_seconds * 1000:.1f}",
                usage.prompt_tokens if usage else "-", usage.completion_tokens if usage else "-",
                outcome.error_reason or "-",
            )  # fmt: skip


def error_reason(err: GatewayError) -> str:
    """The `reason` label of the errors metric for a refusal the gateway made itself."""
    if err.code in ("response_not_found", "previous_response_not_found"):
        return "unknown_response"
    return {
        400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "unknown_model",
        408: "body_timeout", 413: "body_too_large", 415: "bad_request", 429: "rate_limited",
    }.get(err.status, err.code or "upstream_error")  # fmt: skip


def _route_of(request: web.Request) -> str:
    """The matched route's template (`/v1/responses/{response_id}`): ids and caller-chosen bytes in a
    path stay out of the log."""
    return request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
