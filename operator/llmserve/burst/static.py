"""Pre-provisioned OpenAI-compatible endpoints a platform team already pays for, as a Provider.

Nothing is rented: `create` claims a free slot of a configured endpoint and `terminate` releases it.
Each endpoint counts as `count` burst replicas at `usd_per_hour` each (for budget accounting only:
the money is spent whether or not a slot is claimed). Claims live in this object and, durably, in the
BurstPool status that records every instance (id `static-<endpoint>-<slot>`, name, created): a new
client (an operator restart, a pool edit) is given them back with `restore_claims` before its first
call, so no slot is handed out twice and no claim is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from llmserve.burst.types import (
    Account,
    ErrorKind,
    Instance,
    LaunchSpec,
    Offer,
    OfferQuery,
    Phase,
    ProviderError,
)

log = logging.getLogger("llmserve.burst.static")

PROVIDER = "static"


@dataclass(frozen=True)
class StaticEndpoint:
    """One endpoint: its base URL (ending before /v1), key (from a Secret), price and capacity."""

    url: str
    api_key: str = field(repr=False)
    usd_per_hour: float = 0.0
    count: int = 1
    gpu_type: str = ""  # "" matches any query
    gpus: int = 1
    region: str = ""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"static endpoint url must start with http:// or https://, got {self.url!r}")
        if self.count < 1:
            raise ValueError(f"static endpoint count must be at least 1, got {self.count}")
        if self.usd_per_hour < 0:
            raise ValueError(f"static endpoint usd_per_hour must not be negative, got {self.usd_per_hour}")


@dataclass
class _Claim:
    name: str
    cluster_id: str
    created: datetime


class StaticProvider:
    """Claims slots of configured endpoints; no I/O."""

    name = PROVIDER

    def __init__(self, endpoints: Sequence[StaticEndpoint]) -> None:
        self._endpoints = list(endpoints)
        self._claims: dict[str, _Claim] = {}  # instance id "static-<endpoint>-<slot>" -> claim

    def restore_claims(self, claims: Sequence[tuple[str, str, str, datetime]]) -> list[str]:
        """Takes back (id, name, cluster id, created) claims recorded in status; returns the ids that name
        no slot of the current endpoints (the pool lost that endpoint: status then forgets them)."""
        unknown = []
        for instance_id, name, cluster_id, created in claims:
            try:
                self._index(instance_id)
            except ProviderError:
                unknown.append(instance_id)
                continue
            self._claims[instance_id] = _Claim(name, cluster_id, created)
        return unknown

    def api_key(self, instance_id: str) -> str:
        """The key the gateway sends to this instance's endpoint (never part of an Instance)."""
        return self._endpoints[self._index(instance_id)[0]].api_key

    def _index(self, instance_id: str) -> tuple[int, int]:
        try:
            _, endpoint, slot = instance_id.split("-")
            index, slot_index = int(endpoint), int(slot)
        except ValueError:
            raise ProviderError(
                ErrorKind.NOT_FOUND, f"no static instance {instance_id!r}", provider=PROVIDER
            ) from None
        if not (0 <= index < len(self._endpoints) and 0 <= slot_index < self._endpoints[index].count):
            raise ProviderError(ErrorKind.NOT_FOUND, f"no static instance {instance_id!r}", provider=PROVIDER)
        return index, slot_index

    def _instance(self, instance_id: str) -> Instance:
        index, _ = self._index(instance_id)
        claim = self._claims.get(instance_id)
        if claim is None:
            raise ProviderError(
                ErrorKind.NOT_FOUND, f"static instance {instance_id} is not claimed", provider=PROVIDER
            )
        endpoint = self._endpoints[index]
        return Instance(
            id=instance_id,
            name=claim.name,
            phase=Phase.RUNNING,
            usd_per_hour=endpoint.usd_per_hour,
            created=claim.created,
            endpoint=endpoint.url.rstrip("/"),
            gpu_type=endpoint.gpu_type,
            gpus=endpoint.gpus,
            cluster_id=claim.cluster_id,
        )

    async def check_account(self) -> Account:
        return Account(ok=True)

    async def list_offers(self, query: OfferQuery) -> list[Offer]:
        offers = []
        for index, endpoint in enumerate(self._endpoints):
            if (
                endpoint.gpu_type not in ("", query.gpu_type)
                or endpoint.usd_per_hour > query.max_usd_per_hour
            ):
                continue
            if query.regions and endpoint.region not in query.regions:
                continue
            if any(f"static-{index}-{slot}" not in self._claims for slot in range(endpoint.count)):
                offers.append(
                    Offer(PROVIDER, endpoint.gpu_type or query.gpu_type, endpoint.gpus, endpoint.usd_per_hour,
                          endpoint.region, str(index))
                )  # fmt: skip
        return sorted(offers, key=lambda offer: offer.usd_per_hour)

    async def create(self, spec: LaunchSpec, offer: Offer) -> Instance:
        for instance_id, claim in self._claims.items():
            if claim.name == spec.name:
                return self._instance(instance_id)  # a repeated create (e.g. after a restart) re-finds it
        try:
            index = int(offer.offer_id)
            endpoint = self._endpoints[index]
        except (ValueError, IndexError):
            raise ProviderError(
                ErrorKind.INVALID, f"no static offer {offer.offer_id!r}", provider=PROVIDER
            ) from None
        if endpoint.usd_per_hour > spec.max_usd_per_hour:
            raise ProviderError(
                ErrorKind.INVALID, "static endpoint is above the price limit", provider=PROVIDER
            )
        for slot in range(endpoint.count):
            instance_id = f"static-{index}-{slot}"
            if instance_id not in self._claims:
                self._claims[instance_id] = _Claim(spec.name, spec.cluster_id, datetime.now(UTC))
                log.info("event=static_claimed id=%s name=%s", instance_id, spec.name)
                return self._instance(instance_id)
        raise ProviderError(
            ErrorKind.CAPACITY, f"static endpoint {index} has no free slot", provider=PROVIDER
        )

    async def get(self, instance_id: str) -> Instance:
        return self._instance(instance_id)

    async def list_owned(self, cluster_id: str) -> list[Instance]:
        return [
            self._instance(i) for i, claim in sorted(self._claims.items()) if claim.cluster_id == cluster_id
        ]

    async def terminate(self, instance_id: str) -> None:
        if self._claims.pop(instance_id, None) is not None:
            log.info("event=static_released id=%s", instance_id)

    async def aclose(self) -> None:
        return None
