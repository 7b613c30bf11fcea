"""Rented burst instances as backends: BurstPool status and instance Secrets in, routes of source "burst" out.

An instance is a backend of its LLMServe's served name while its pool's status says it is serving and
not draining (llmserve.burst.backends.serving_backends). Requests carry the instance's own key, and the
connection trusts only what its Secret says: the instance's pinned certificate (Vast.ai) or the
provider's proxy (RunPod). Routing prefers local replicas: a rented one is chosen only when it is
less loaded than the best local one by more than BURST_PENALTY_REQUESTS.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmserve.api.burstpool import BurstPoolStatus
from llmserve.burst.backends import INSTANCE_LABEL, InstanceAccess, access_from_secret, serving_backends
from llmserve.gateway.discovery import _watch_forever
from llmserve.gateway.registry import Backend, ModelRoute, Registry
from llmserve.gateway.routing import Candidate, choose, load_score

log = logging.getLogger(__name__)

SOURCE = "burst"
# A rented replica costs money by the hour and is further away: it takes a request only when it is
# at least this many in-flight requests less loaded than the best local replica.
BURST_PENALTY_REQUESTS = 1.0
Obj = dict[str, Any]


def choose_preferring_local(
    candidates: Sequence[Candidate], burst_keys: frozenset[str] | set[str], rng: random.Random
) -> Candidate | None:
    """Least load within local and within rented replicas, then local unless rented is clearly lighter."""
    local = choose([c for c in candidates if c.key not in burst_keys], rng)
    rented = choose([c for c in candidates if c.key in burst_keys], rng)
    if local is None or rented is None:
        return local or rented
    if local.ejected != rented.ejected:
        return rented if local.ejected else local
    return local if load_score(local) <= load_score(rented) + BURST_PENALTY_REQUESTS else rented


@dataclass
class BurstView:
    """Pool statuses and parsed instance Secrets (only the key and TLS context are kept, not the object)."""

    pools: dict[str, BurstPoolStatus] = field(default_factory=dict)
    access: dict[str, InstanceAccess] = field(default_factory=dict)  # instance name -> how to reach it

    def routes(self, served_names: Mapping[str, str]) -> list[ModelRoute]:
        """`served_names`: "<namespace>/<llmserve>" -> served name, for the LLMServes this gateway serves."""
        out: list[ModelRoute] = []
        for owner, backends in sorted(serving_backends(self.pools.values()).items()):
            served = served_names.get(owner)
            if served is None:
                continue  # not a model this gateway serves (another namespace, or deleted)
            routed = []
            for backend in sorted(backends, key=lambda b: b.instance):
                access = self.access.get(backend.instance)
                if access is None:
                    continue  # its Secret has not arrived (or is invalid): no key, no requests
                headers = (("Authorization", f"Bearer {access.api_key}"),)
                routed.append(
                    Backend(backend.url.rstrip("/"), headers, source=SOURCE, tls=access.ssl_context)
                )
            namespace, _, name = owner.partition("/")
            out.append(ModelRoute(served, tuple(routed), namespace, name))
        return out


class BurstDiscovery:
    """Watches BurstPools (cluster-scoped) and instance Secrets in the operator's namespace."""

    def __init__(
        self,
        registry: Registry,
        namespace: str,
        served_names: Callable[[], Mapping[str, str]],
        provider_overrides: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.registry, self.namespace, self.served_names = registry, namespace, served_names
        self.provider_overrides = provider_overrides or {}  # the settings' burst_providers (CA files)
        self.view = BurstView()

    async def run(self) -> None:
        await asyncio.gather(
            _watch_forever("BurstPool", None, "", self._on_pool),
            _watch_forever("Secret", self.namespace, INSTANCE_LABEL, self._on_secret),
        )

    def publish(self) -> None:
        self.registry.replace(SOURCE, self.view.routes(self.served_names()))

    def _on_pool(self, event_type: str, obj: Obj) -> None:
        if event_type == "SYNC":
            self.view.pools = {}
            for item in obj["items"]:
                self._store_pool(item)
        elif event_type == "DELETED":
            self.view.pools.pop(obj["metadata"]["name"], None)
        else:
            self._store_pool(obj)
        self.publish()

    def _store_pool(self, obj: Obj) -> None:
        try:
            self.view.pools[obj["metadata"]["name"]] = BurstPoolStatus.model_validate(obj.get("status") or {})
        except ValueError as err:
            log.warning(
                "event=burstpool_status_invalid pool=%s error=%s", obj["metadata"]["name"], type(err).__name__
            )

    def _on_secret(self, event_type: str, obj: Obj) -> None:
        if event_type == "SYNC":
            self.view.access = {}
            for item in obj["items"]:
                self._store_secret(item)
        elif event_type == "DELETED":
            self.view.access.pop(self._instance(obj), None)
        else:
            self._store_secret(obj)
        self.publish()

    @staticmethod
    def _instance(secret: Obj) -> str:
        return str((secret["metadata"].get("labels") or {}).get(INSTANCE_LABEL, ""))

    def _store_secret(self, secret: Obj) -> None:
        instance = self._instance(secret)
        try:
            self.view.access[instance] = access_from_secret(secret, self.provider_overrides)
        except ValueError as err:  # the message names the field, never a value
            self.view.access.pop(instance, None)
            log.warning("event=burst_secret_invalid instance=%s reason=%r", instance, str(err))
