"""Finds this cluster's rented instances that no BurstPool status wants, once they are old enough to reap."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from llmserve.burst.types import Instance, Phase, owned_by


@dataclass(frozen=True)
class Wanted:
    """What every pool's status records: instance ids, and the names of intents whose create is unconfirmed."""

    ids: frozenset[str] = frozenset()
    pending_names: frozenset[str] = frozenset()

    def __or__(self, other: Wanted) -> Wanted:
        return Wanted(self.ids | other.ids, self.pending_names | other.pending_names)

    def wants(self, instance: Instance) -> bool:
        return instance.id in self.ids or instance.name in self.pending_names


@dataclass
class Reaper:
    """Remembers when each unwanted instance was first seen (memory only: a restart starts the clock again,
    which only delays a reap). An instance is reaped when it is ours (name prefix and cluster id), wanted
    by no status, and older than the grace period by the provider's creation time, or, when the provider
    gives none, by the time this process first saw it."""

    cluster_id: str
    grace_seconds: float
    first_seen: dict[str, datetime] = field(default_factory=dict)

    def ours(self, instance: Instance) -> bool:
        if instance.cluster_id is not None and instance.cluster_id != self.cluster_id:
            return False  # a foreign cluster using our name prefix
        return owned_by(instance.name, self.cluster_id)

    def orphans(self, listed: Iterable[Instance], wanted: Wanted, now: datetime) -> list[Instance]:
        out: list[Instance] = []
        seen_now: set[str] = set()
        for instance in listed:
            if instance.phase is Phase.TERMINATED or not self.ours(instance) or wanted.wants(instance):
                continue
            seen_now.add(instance.id)
            first = self.first_seen.setdefault(instance.id, now)
            born = instance.created if instance.created is not None else first
            if (now - born).total_seconds() >= self.grace_seconds:
                out.append(instance)
        # Forget what is gone or wanted again, so the map stays as small as the orphans.
        for instance_id in set(self.first_seen) - seen_now:
            del self.first_seen[instance_id]
        return out
