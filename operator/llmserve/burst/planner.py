"""Pure burst decisions: how many rented replicas each model wants, which to drain, which offers to try."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from llmserve.api.burstpool import GpuPreference, InstanceStatus, ModelBurstStatus
from llmserve.burst.budget import Caps, parse_time, rfc3339
from llmserve.burst.types import Offer

REQUESTED = "Requested"  # the phase of an intent: recorded in status, create not (yet) confirmed


@dataclass(frozen=True)
class Demand:
    """What one LLMServe using the pool needs now, as the controller read it from the cluster."""

    owner: str  # <namespace>/<name>
    max_replicas: int
    unschedulable_replicas: int  # local replicas Unschedulable for longer than burst.unschedulableSeconds
    local_ready_replicas: int
    local_desired_replicas: int = 0
    scale_in_delay_seconds: float = 120
    allowed: bool = True  # the pool's allowedNamespaces selects the LLMServe's namespace
    image: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = 8000
    # What the rented engine serves, for its launch spec (burst.security.vllm_launch_spec).
    model: str = ""
    served_model_name: str = ""
    extra_args: tuple[str, ...] = ()  # the LLMServe's engine args beyond model, name, host and port
    # spec.model.hfTokenSecret as (Secret name, key) in the owner's namespace: read only when renting, and
    # passed to the instance as HF_TOKEN (never kept here, so a logged Demand shows no token).
    hf_token_secret: tuple[str, str] | None = None


def wanted_burst_replicas(demand: Demand) -> int:
    """Local first, rent the shortfall: min(local replicas stuck Unschedulable long enough, maxReplicas)."""
    if not demand.allowed:
        return 0
    return max(0, min(demand.unschedulable_replicas, demand.max_replicas))


def is_active(record: InstanceStatus) -> bool:
    """Counts toward the model's burst replicas: neither draining nor being terminated."""
    return record.draining_since is None and record.terminating_since is None


def drain_order(records: Sequence[InstanceStatus]) -> list[InstanceStatus]:
    """Who goes first on scale-in: replicas not serving yet, then the most expensive, then the newest."""
    return sorted(records, key=lambda r: (r.ready_since is not None, -r.usd_per_hour, -r.slot))


@dataclass
class ScaleDecision:
    create: int = 0
    drain: list[InstanceStatus] = field(default_factory=list)
    reason: str = ""


def decide_model(
    demand: Demand, records: Sequence[InstanceStatus], model: ModelBurstStatus, now: datetime
) -> ScaleDecision:
    """Creates or drains for one model; updates its bookkeeping (local ready seen, scale-in clock).

    A local replica that became Ready since the last decision replaces one burst replica at once (its
    pending pod was the claim the burst replica stood in for); any other surplus waits for the model's
    scale-in delay, so a flapping Unschedulable count does not churn rented machines.
    """
    active = [r for r in records if is_active(r)]
    wanted = wanted_burst_replicas(demand)
    local_gain = max(0, demand.local_ready_replicas - model.local_ready_seen)
    model.local_ready_seen = demand.local_ready_replicas
    if wanted >= len(active):
        model.scale_in_since = None
        return ScaleDecision(create=wanted - len(active), reason="local replicas Unschedulable")
    surplus = len(active) - wanted
    victims = drain_order(active)
    if not demand.allowed:  # a refused namespace spends nothing: no delay
        model.scale_in_since = None
        return ScaleDecision(drain=victims, reason="namespace not allowed by allowedNamespaces")
    # Above maxReplicas (the user lowered it) is never waited out; nor is a local replica's arrival.
    immediate = min(surplus, max(local_gain, len(active) - demand.max_replicas))
    decision = ScaleDecision(drain=victims[:immediate], reason="a local replica became Ready")
    if surplus > immediate:
        since = parse_time(model.scale_in_since)
        if since is None or since > now:
            model.scale_in_since = rfc3339(now)
        elif (now - since).total_seconds() >= demand.scale_in_delay_seconds:
            decision.drain = victims[:surplus]
            decision.reason = "fewer burst replicas wanted"
            model.scale_in_since = None
    return decision


def price_drains(
    records: Sequence[InstanceStatus], caps: Caps, spent_usd: float
) -> list[tuple[InstanceStatus, str]]:
    """Instances to drain for money: each above its own price cap, then the most expensive while the
    burn breaks maxHourlySpend or can no longer be afforded within the month's budget."""
    active = [r for r in records if is_active(r) and r.id is not None]
    out: list[tuple[InstanceStatus, str]] = []
    for record in active:
        if record.max_usd_per_hour and record.usd_per_hour > record.max_usd_per_hour + 1e-9:
            out.append(
                (
                    record,
                    f"price rose to {record.usd_per_hour:.2f} USD/h, above its cap {record.max_usd_per_hour:.2f}",
                )
            )
    chosen = {r.name for r, _ in out}
    remaining = sorted((r for r in active if r.name not in chosen), key=lambda r: -r.usd_per_hour)
    burn = sum(r.usd_per_hour for r in remaining)
    for record in remaining:
        if burn > caps.max_hourly_spend_usd + 1e-9:
            out.append(
                (
                    record,
                    f"burn rate {burn:.2f} USD/h is above maxHourlySpend {caps.max_hourly_spend_usd:.2f}",
                )
            )
        elif spent_usd + caps.reserve_usd(burn) > caps.monthly_budget_usd:
            out.append((record, f"monthlyBudget {caps.monthly_budget_usd:.2f} USD is nearly spent"))
        else:
            break
        burn -= record.usd_per_hour
    return out


def ordered_offers(
    preference_offers: Sequence[tuple[GpuPreference, Sequence[Offer]]],
) -> list[tuple[GpuPreference, Offer]]:
    """Offers in the order to try: preferences in their order, each one's offers cheapest first. An offer
    above its preference's cap, or of another GPU count, is dropped whatever the provider answered."""
    out: list[tuple[GpuPreference, Offer]] = []
    for preference, offers in preference_offers:
        fitting = [
            o
            for o in offers
            if o.usd_per_hour <= preference.max_usd_per_hour + 1e-9 and o.gpus == preference.gpus_per_replica
        ]
        out += [(preference, o) for o in sorted(fitting, key=lambda o: (o.usd_per_hour, o.offer_id))]
    return out
