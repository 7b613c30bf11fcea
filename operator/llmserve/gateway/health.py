"""Passive health checking of backends (pure: the caller passes the clock).

Each connect failure (refused, timed out) or frozen answer ejects a backend; consecutive failures
double the ejection, up to a cap, so a replica behind a dead node costs one connect timeout per
ejection window instead of one per request. Any answer — a request that got a response head, or a
successful /metrics scrape (the probe) — clears the count and brings the backend back at once.
"""

from __future__ import annotations

from llmserve.gateway.registry import BackendLoad

MAX_EJECT_SECONDS = 60.0


def record_failure(load: BackendLoad, now: float, base_seconds: float) -> float:
    """Ejects the backend after a failure; returns the ejection length in seconds."""
    load.consecutive_failures += 1
    seconds: float = min(base_seconds * 2.0 ** (load.consecutive_failures - 1), MAX_EJECT_SECONDS)
    load.ejected_until = now + seconds
    return seconds


def record_success(load: BackendLoad) -> bool:
    """The backend answered: back in rotation. True when it had been ejected (to log the return)."""
    was_out = load.consecutive_failures > 0
    load.consecutive_failures = 0
    load.ejected_until = 0.0
    return was_out
