"""Pure backend choice: power of two choices over a least-load score built from live and scraped load."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One backend as routing sees it."""

    key: str
    outstanding: int  # requests this gateway has in flight there now
    scraped_running: float = 0.0  # engine's running requests at the last scrape (all clients)
    scraped_waiting: float = 0.0  # engine's queued requests at the last scrape (all clients)
    kv_usage_fraction: float = 0.0  # engine's KV-cache use at the last scrape, 0..1
    ejected: bool = False  # recently failed to connect


@dataclass(frozen=True)
class Weights:
    """How much a queued request and a full KV cache count, in units of one in-flight request."""

    waiting: float = 1.0
    kv_full: float = 4.0


def load_score(candidate: Candidate, weights: Weights = Weights()) -> float:
    """Estimated load of a backend; lower is better.

    The gateway's own in-flight count is exact and current; the scrape is older but also sees other
    clients (another gateway replica, direct callers). Taking the larger of the two avoids counting
    our own requests twice. Queued requests add extra weight because they mean the engine is full,
    and KV use predicts queueing before it starts.
    """
    seen_by_engine = candidate.scraped_running + candidate.scraped_waiting
    in_flight = max(float(candidate.outstanding), seen_by_engine)
    return (
        in_flight
        + weights.waiting * candidate.scraped_waiting
        + weights.kv_full * candidate.kv_usage_fraction
    )


def choose(
    candidates: Sequence[Candidate], rng: random.Random, weights: Weights = Weights()
) -> Candidate | None:
    """Power of two choices: sample two backends, take the less loaded.

    Two random samples avoid the herd that a strict global minimum causes when several requests (or
    gateway replicas) act on the same stale scrape, while staying close to least-load. Backends that
    recently refused connections are only used when no other is left.
    """
    healthy = [c for c in candidates if not c.ejected]
    pool = healthy or list(candidates)
    if not pool:
        return None
    if len(pool) == 1:
        return pool[0]
    first, second = rng.sample(pool, 2)
    return first if load_score(first, weights) <= load_score(second, weights) else second
