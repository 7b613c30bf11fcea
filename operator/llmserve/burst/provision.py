"""Renting one burst replica: the intent on record first, then the cheapest fitting offer within the caps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from llmserve.api.burstpool import BurstPoolSpec, BurstPoolStatus, GpuPreference, InstanceStatus
from llmserve.burst.budget import Caps, create_refusal, rfc3339
from llmserve.burst.planner import REQUESTED, Demand, ordered_offers
from llmserve.burst.types import (
    ErrorKind,
    Instance,
    LaunchSpec,
    Offer,
    OfferQuery,
    Provider,
    ProviderError,
    instance_name,
)

# Turns the provider-neutral spec into what is really launched (per-instance key, TLS): the controller's
# is burst.security.vllm_launch_spec plus a Secret written before the create call.
Launcher = Callable[[InstanceStatus, Demand, LaunchSpec], Awaitable[LaunchSpec]]
OfferList = list[tuple[GpuPreference, Offer]]


@dataclass(frozen=True)
class Created:
    record: InstanceStatus
    offer: Offer


@dataclass(frozen=True)
class NoOffer:
    refusal: str  # why the money caps refused every fitting offer; "" when none was left at all


class LaunchRefused(Exception):
    """The model's own launch inputs are unusable (e.g. its spec.model.hfTokenSecret is missing). The
    message names the field and the object, never a secret's contents; `condition_reason` is the
    CamelCase reason of the LLMServe's BurstLaunchRefused condition."""

    def __init__(self, message: str, condition_reason: str = "LaunchRefused") -> None:
        super().__init__(message)
        self.condition_reason = condition_reason


@dataclass(frozen=True)
class Refused:
    """This model cannot be launched now (LaunchRefused); other models' creates go on."""

    reason: str  # the message: which field, which object
    condition_reason: str = "LaunchRefused"


@dataclass(frozen=True)
class Stopped:
    """A provider error that ends this step's creates; an ambiguous one leaves the intent on record."""

    error: ProviderError
    action: str


def follow(record: InstanceStatus, instance: Instance) -> None:
    """Copies what the provider says about an instance into its record."""
    record.phase = instance.phase.value
    record.usd_per_hour = instance.usd_per_hour
    record.endpoint = instance.endpoint or record.endpoint
    record.gpu_type = instance.gpu_type or record.gpu_type
    record.gpus = instance.gpus or record.gpus


class StatusSaver(Protocol):
    async def save(self, status: BurstPoolStatus) -> None: ...


class Provisioner:
    def __init__(
        self,
        *,
        spec: BurstPoolSpec,
        cluster_id: str,
        provider: Provider,
        store: StatusSaver,
        caps: Caps,
        launcher: Launcher | None,
    ) -> None:
        self.spec, self.cluster_id, self.provider, self.store = spec, cluster_id, provider, store
        self.caps, self.launcher = caps, launcher

    def preferences(self) -> list[GpuPreference]:
        """The pool's GPU preferences; a static pool without any takes any endpoint within maxHourlySpend."""
        if self.spec.gpu_preferences or self.spec.provider != "static":
            return list(self.spec.gpu_preferences)
        # Built without validation: maxHourlySpend may be 0 (then nothing fits, as the caps would say).
        return [GpuPreference.model_construct(gpu_type="static", gpus_per_replica=1,
                                              max_usd_per_hour=self.spec.max_hourly_spend)]  # fmt: skip

    async def offers(self) -> OfferList:
        """Every fitting offer in the order to try; raises ProviderError for anything but no capacity."""
        found: list[tuple[GpuPreference, list[Offer]]] = []
        for preference in self.preferences():
            query = OfferQuery(
                gpu_type=preference.gpu_type,
                gpus=preference.gpus_per_replica,
                max_usd_per_hour=preference.max_usd_per_hour,
                regions=tuple(self.spec.regions),
                cloud_type=self.spec.cloud_type,
            )
            try:
                found.append((preference, await self.provider.list_offers(query)))
            except ProviderError as err:
                if err.kind is not ErrorKind.CAPACITY:
                    raise
        return ordered_offers(found)

    async def create_one(
        self,
        status: BurstPoolStatus,
        demand: Demand,
        offers: OfferList,
        burn: Callable[[], float],
        now: datetime,
    ) -> Created | NoOffer | Refused | Stopped:
        """Tries the offers in order until one is rented; `offers` loses those that had no capacity."""
        refusal = ""
        for preference, offer in list(offers):
            why = create_refusal(self.caps, burn(), offer.usd_per_hour, status.spent_this_month_usd)
            if why:
                refusal = refusal or why
                continue
            record = self._intent(status, demand, preference, offer, now)
            await self.store.save(status)  # the intent is on record before the money is spent
            launch = LaunchSpec(
                name=record.name,
                cluster_id=self.cluster_id,
                image=self.spec.image or demand.image,
                args=demand.args,
                env=dict(demand.env),
                port=demand.port,
                gpu_type=offer.gpu_type,
                gpus=offer.gpus,
                max_usd_per_hour=preference.max_usd_per_hour,
            )
            if self.launcher is not None:
                try:
                    launch = await self.launcher(record, demand, launch)
                except LaunchRefused as refused:  # nothing was created: the intent goes
                    status.instances.remove(record)
                    await self.store.save(status)
                    return Refused(str(refused), refused.condition_reason)
            try:
                instance = await self.provider.create(launch, offer)
            except ProviderError as err:
                if err.kind is ErrorKind.AMBIGUOUS:  # it may exist: the intent stays, listing resolves it
                    return Stopped(err, f"create {record.name}")
                status.instances.remove(record)  # nothing was created
                await self.store.save(status)
                if err.kind is ErrorKind.CAPACITY:
                    offers.remove((preference, offer))
                    continue
                return Stopped(err, f"create {record.name}")
            record.id = instance.id
            follow(record, instance)
            await self.store.save(status)
            return Created(record, offer)
        return NoOffer(refusal)

    def _intent(
        self, status: BurstPoolStatus, demand: Demand, preference: GpuPreference, offer: Offer, now: datetime
    ) -> InstanceStatus:
        model = next(m for m in status.models if m.owner == demand.owner)
        record = InstanceStatus(
            name=instance_name(self.cluster_id, demand.owner, model.next_slot),
            owner=demand.owner,
            slot=model.next_slot,
            phase=REQUESTED,
            gpu_type=offer.gpu_type,
            gpus=offer.gpus,
            offer_id=offer.offer_id,
            usd_per_hour=offer.usd_per_hour,
            max_usd_per_hour=preference.max_usd_per_hour,
            created=rfc3339(now),
            price_seen=rfc3339(now),
        )
        model.next_slot += 1  # slots are never reused: a late phantom cannot be taken for a new create
        status.instances.append(record)
        return record
