"""Metering rules that a client cannot dodge (pure): what counts as a stream, and which usage
numbers from a backend are believable."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from llmserve.gateway.auth import ApiKey
from llmserve.gateway.limits import Refusal
from llmserve.gateway.usage import MAX_PLAUSIBLE_TOKENS, SseUsageTap, Usage, usage_of

# Strings vLLM's pydantic bool reads as false; every other truthy value makes vLLM stream.
_FALSE_STRINGS = {"", "0", "off", "f", "false", "n", "no"}


def wants_stream(value: object) -> bool:
    """True whenever the engine would stream: `true`, but also `1`, `"yes"`, `"true"`, … (pydantic's
    lax bool), so a client cannot get a stream metered as a non-stream by spelling `stream` oddly."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)


USAGE_TAIL_BYTES = 4096
# Reserved against a key's tokens-per-minute budget while a request without max_tokens is in flight.
DEFAULT_RESERVATION_TOKENS = 1024
_USAGE_IN_TAIL = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')


def plausible_tokens(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_PLAUSIBLE_TOKENS else None


def usage_from_tail(tail: bytes) -> Usage | None:
    """Usage from the last bytes of a large JSON answer (vLLM puts `usage` last)."""
    matches = _USAGE_IN_TAIL.findall(tail)
    if not matches:
        return None
    try:
        fields = json.loads(matches[-1])
    except ValueError:
        return None
    return usage_of({"usage": fields})


def charged_usage(tap: SseUsageTap) -> Usage:
    """What a stream that ended early is charged: its usage chunk if one came, else one completion
    token per event sent (vLLM streams one token per event by default)."""
    if tap.usage is not None:
        return tap.usage
    return Usage(0, tap.content_events)


def requested_tokens(payload: dict[str, Any], body_bytes: int) -> int:
    """Tokens to reserve while a request runs: its max_tokens (or the default) plus a prompt estimate
    of one token per four bytes of body."""
    limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
    completion = plausible_tokens(limit) or DEFAULT_RESERVATION_TOKENS
    return completion + body_bytes // 4


@dataclass
class TokenReservations:
    """Tokens promised to requests in flight, per key name: a key is admitted only while its
    tokens-per-minute balance exceeds what its running requests may still use, so concurrent
    requests overdraw the budget by at most one request's reservation."""

    reserved: dict[str, float] = field(default_factory=dict)

    def admit(self, key: ApiKey, balance: float | None, amount: float) -> Refusal | None:
        if balance is None:  # no tokens-per-minute limit
            return None
        held = self.reserved.get(key.name, 0.0)
        if balance - held <= 0:
            refill_per_second = key.tokens_per_minute / 60.0
            return Refusal("tokens_per_minute", max((held - balance) / refill_per_second, 0.1))
        self.reserved[key.name] = held + amount
        return None

    def release(self, key: ApiKey, amount: float) -> None:
        left = self.reserved.get(key.name, 0.0) - amount
        if left > 1e-9:
            self.reserved[key.name] = left
        else:
            self.reserved.pop(key.name, None)
