"""Pure backend choice: slot-aware least load, prefix affinity with bounded loads, and the old power of two."""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

# vLLM's API-server default for --max-num-seqs on GPUs under 70 GiB (H100-class defaults are higher, so
# this errs towards seeing a replica as full too early, never too late).
DEFAULT_BATCH_SLOTS = 256
# Consistent hashing with bounded loads: a replica takes an affine request while its load stays within
# this factor of the fleet's mean (KubeAI's and the paper's usual 1.25).
DEFAULT_LOAD_FACTOR = 1.25
_VIRTUAL_NODES = 64  # ring points per replica: enough to spread keys evenly over a handful of replicas


class Policy(StrEnum):
    PREFIX = "prefix"  # prefix affinity (bounded load) first, slot-aware least load otherwise
    LEAST_LOAD = "least-load"  # slot-aware least load only
    POWER_OF_TWO = "power-of-two"  # the gateway's original router, kept for comparison


@dataclass(frozen=True)
class Candidate:
    """One backend as routing sees it."""

    key: str
    outstanding: int  # requests this gateway has in flight there now (exact)
    scraped_running: float = 0.0  # engine's running requests at the last scrape (all clients)
    scraped_waiting: float = 0.0  # engine's queued requests at the last scrape (all clients)
    kv_usage_fraction: float = 0.0  # engine's KV-cache use at the last scrape, 0..1
    ejected: bool = False  # recently failed to connect
    capacity: int = DEFAULT_BATCH_SLOTS  # batch slots (--max-num-seqs)
    # Requests other clients (other gateway replicas, direct callers) had there at the last scrape:
    # the engine's running + waiting minus this gateway's own in-flight count at that moment.
    others_in_flight: float = 0.0

    @property
    def load(self) -> float:
        """Requests at the replica: this gateway's exact count plus everyone else's as last scraped."""
        return self.outstanding + self.others_in_flight

    @property
    def has_room(self) -> bool:
        """A free batch slot. An engine that reported a queue was full at `scraped_running` (KV cache or
        slots), so it has room again only once the load fell below that."""
        limit = float(self.capacity)
        if self.scraped_waiting > 0:
            limit = min(limit, max(1.0, self.scraped_running))
        return self.load + 1 <= limit


@dataclass(frozen=True)
class Choice:
    """What routing decided, and whether it broke the rule that a full replica is never chosen while
    another has room (by the gateway's own view; the old router can, the new ones never do)."""

    candidate: Candidate
    placed_on_full: bool = False
    affine: bool = False  # the prefix's own replica (or the next one on its ring) took it


def _healthy(candidates: Sequence[Candidate]) -> list[Candidate]:
    # Backends that recently refused connections are only used when no other is left.
    return [c for c in candidates if not c.ejected] or list(candidates)


def _outcome(chosen: Candidate, pool: Sequence[Candidate], affine: bool = False) -> Choice:
    on_full = not chosen.has_room and any(c.has_room for c in pool)
    return Choice(chosen, on_full, affine)


def least_load(candidates: Sequence[Candidate], rng: random.Random) -> Choice | None:
    """Scans every backend: among those with a free slot, the lowest load per slot, then the emptier KV
    cache, then the shorter engine queue; exact ties are broken at random. When none has room, the
    least over-full (load per slot) wins."""
    pool = _healthy(candidates)
    if not pool:
        return None
    room = [c for c in pool if c.has_room]
    eligible = room or pool

    def rank(c: Candidate) -> tuple[float, float, float]:
        return (c.load / max(1, c.capacity), c.kv_usage_fraction, c.scraped_waiting)

    best = min(rank(c) for c in eligible)
    tied = [c for c in eligible if rank(c) == best]
    return _outcome(tied[0] if len(tied) == 1 else rng.choice(tied), pool)


def affine(
    candidates: Sequence[Candidate],
    affinity_key: int | None,
    rng: random.Random,
    load_factor: float = DEFAULT_LOAD_FACTOR,
) -> Choice | None:
    """Consistent hashing with bounded loads: walk the hash ring from the prefix's point and take the
    first replica that has a free slot and whose load stays within `load_factor` x its share of the
    fleet's load; if none qualifies (or there is no key), slot-aware least load decides."""
    pool = _healthy(candidates)
    if affinity_key is None or len(pool) < 2:
        return least_load(candidates, rng)
    room = [c for c in pool if c.has_room]
    if not room:
        return least_load(candidates, rng)
    total_load = sum(c.load for c in pool) + 1  # including this request
    total_capacity = sum(max(1, c.capacity) for c in pool)
    by_key = {c.key: c for c in room}
    for key in ring_walk(tuple(sorted(c.key for c in pool)), affinity_key):
        c = by_key.get(key)
        if c is None:
            continue
        bound = math.ceil(load_factor * total_load * max(1, c.capacity) / total_capacity)
        if c.load + 1 <= bound:
            return _outcome(c, pool, affine=True)
    return least_load(candidates, rng)


def load_score(candidate: Candidate, weights_waiting: float = 1.0, weights_kv_full: float = 4.0) -> float:
    """The original router's load estimate (lower is better): the larger of the gateway's in-flight
    count and the engine's last-scraped running + waiting, plus queued requests, plus 4 x KV use."""
    seen_by_engine = candidate.scraped_running + candidate.scraped_waiting
    in_flight = max(float(candidate.outstanding), seen_by_engine)
    return (
        in_flight
        + weights_waiting * candidate.scraped_waiting
        + weights_kv_full * candidate.kv_usage_fraction
    )


def power_of_two(candidates: Sequence[Candidate], rng: random.Random) -> Choice | None:
    """The original router: two random backends, the lower `load_score` wins. It ignores batch slots,
    so it can queue a request behind a full replica while another has room (kept for comparison)."""
    pool = _healthy(candidates)
    if not pool:
        return None
    if len(pool) == 1:
        return _outcome(pool[0], pool)
    first, second = rng.sample(pool, 2)
    return _outcome(first if load_score(first) <= load_score(second) else second, pool)


def route(
    policy: Policy,
    candidates: Sequence[Candidate],
    rng: random.Random,
    affinity_key: int | None = None,
    load_factor: float = DEFAULT_LOAD_FACTOR,
) -> Choice | None:
    """The router as one pure function (what the gateway and the fleet benchmark call)."""
    if policy is Policy.POWER_OF_TWO:
        return power_of_two(candidates, rng)
    if policy is Policy.PREFIX:
        return affine(candidates, affinity_key, rng, load_factor)
    return least_load(candidates, rng)


def choose(candidates: Sequence[Candidate], rng: random.Random) -> Candidate | None:
    """Slot-aware least load, as a plain candidate (None when there is none)."""
    choice = least_load(candidates, rng)
    return None if choice is None else choice.candidate


# -- the hash ring ---------------------------------------------------------------------------------


def stable_hash(data: bytes) -> int:
    """64-bit hash that is the same in every process (Python's hash() is salted per process), so every
    gateway replica maps a prefix to the same replica."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=128)
def _ring(keys: tuple[str, ...]) -> tuple[list[int], list[str]]:
    points = sorted((stable_hash(f"{key}#{i}".encode()), key) for key in keys for i in range(_VIRTUAL_NODES))
    return [p for p, _ in points], [k for _, k in points]


def ring_walk(keys: tuple[str, ...], affinity_key: int) -> Iterator[str]:
    """Distinct backend keys in ring order from the key's point: its own replica first, then the next
    ones, so removing a replica only moves the prefixes it owned."""
    hashes, owners = _ring(keys)
    start = bisect.bisect_left(hashes, affinity_key % (1 << 64))
    seen: set[str] = set()
    for offset in range(len(owners)):
        owner = owners[(start + offset) % len(owners)]
        if owner not in seen:
            seen.add(owner)
            yield owner
            if len(seen) == len(keys):
                return
