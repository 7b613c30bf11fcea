"""Rent versus buy: monthly cost of owning GPUs for the peak, owning the baseline and renting spikes, or
renting everything, for one load shape; and the utilization at which owning a GPU breaks even."""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmserve.autoscale.hold import slo_hold_seconds
from llmserve.plan.capacity import PlanError
from llmserve.plan.fit import TIMES
from llmserve.plan.load import LoadShape

HOURS_PER_MONTH = 730.0  # 8,760 h / 12


@dataclass(frozen=True)
class LocalPrice:
    """What one owned GPU costs per hour, all in, and how that figure was made."""

    usd_per_gpu_hour: float
    basis: str


def local_price(
    all_in_usd_per_gpu_hour: float | None = None,
    purchase_usd: float | None = None,
    amortization_months: float = 36,
    power_watts: float = 700,
    usd_per_kwh: float = 0.12,
    pue: float = 1.3,
) -> LocalPrice:
    """Either an all-in hourly figure, or purchase price spread over the amortization period plus power
    (board watts x PUE x electricity price). Hosting, networking and staff belong in the all-in figure."""
    if all_in_usd_per_gpu_hour is not None:
        if all_in_usd_per_gpu_hour < 0:
            raise PlanError("--local-usd-per-gpu-hour must be at least 0")
        return LocalPrice(all_in_usd_per_gpu_hour, f"${all_in_usd_per_gpu_hour:g}/GPU-hour all in (given)")
    if purchase_usd is None:
        raise PlanError("give --local-usd-per-gpu-hour, or --gpu-purchase-usd (with --amortization-months, "
                        "--power-watts, --usd-per-kwh)")  # fmt: skip
    if purchase_usd < 0 or amortization_months <= 0 or power_watts < 0 or usd_per_kwh < 0 or pue < 1:
        raise PlanError("--gpu-purchase-usd, --power-watts and --usd-per-kwh must be at least 0, "
                        "--amortization-months above 0 and --pue at least 1")  # fmt: skip
    capital = purchase_usd / (amortization_months * HOURS_PER_MONTH)
    power = power_watts / 1000 * pue * usd_per_kwh
    basis = (f"${purchase_usd:,.0f} over {amortization_months:g} months (${capital:.3f}/h) + {power_watts:g} W {TIMES} "
             f"PUE {pue:g} at ${usd_per_kwh:g}/kWh (${power:.3f}/h)")  # fmt: skip
    return LocalPrice(capital + power, basis)


@dataclass(frozen=True)
class FleetPolicy:
    """How replicas follow the load when they are rented (or autoscaled): llmserve's defaults."""

    target_utilization: float = 0.8  # kvCacheTarget / batchSlotsTarget: headroom while new replicas start
    scale_down_delay_seconds: float = 300.0  # scaleDownDelaySeconds: replicas are held this long
    cold_start_seconds: float = 60.0  # a new replica holds its GPUs this long before serving
    min_replicas: int = 1
    # autoscaling.slo set: the autoscaler holds replicas one start-up (llmserve.autoscale.policy), not
    # the whole scale-down delay
    slo: bool = False

    @property
    def hold_seconds(self) -> float:
        """How long replicas are held after the load falls: what the autoscaler itself would hold."""
        if not self.slo:
            return self.scale_down_delay_seconds
        return slo_hold_seconds(self.scale_down_delay_seconds, self.cold_start_seconds)


@dataclass(frozen=True)
class Option:
    """One way to provide the capacity, per month."""

    name: str
    owned_gpus: int
    owned_gpu_hours: float
    rented_gpu_hours: float
    usd_per_month: float
    busy_gpu_hours: float  # GPU-hours the load needs at full per-replica capacity

    @property
    def utilization(self) -> float:
        """Share of paid GPU-hours the load actually needs."""
        paid = self.owned_gpu_hours + self.rented_gpu_hours
        return self.busy_gpu_hours / paid if paid else 0.0


@dataclass(frozen=True)
class RentBuyPlan:
    shape: LoadShape
    gpus_per_replica: int
    requests_per_second_per_replica: float
    local: LocalPrice
    rent_usd_per_gpu_hour: float
    needed_replicas: tuple[int, ...]  # at full per-replica capacity, per bin (buy-for-peak sizing)
    followed_replicas: tuple[int, ...]  # what an autoscaler holds, per bin (rented capacity)
    buy_for_peak: Option
    buy_baseline_rent_spikes: Option
    rent_all: Option
    shape_repeats_per_month: float

    @property
    def break_even_utilization(self) -> float:
        """Owning a GPU is cheaper than renting it once it is needed more than this share of the hours."""
        return self.local.usd_per_gpu_hour / self.rent_usd_per_gpu_hour

    @property
    def cheapest(self) -> Option:
        return min(
            (self.buy_for_peak, self.buy_baseline_rent_spikes, self.rent_all), key=lambda o: o.usd_per_month
        )

    def shape_gpu_hours(self, option: Option) -> float:
        """Paid GPU-hours over one pass of the load shape (what a fleet simulation of the trace counts)."""
        return (option.owned_gpu_hours + option.rented_gpu_hours) / self.shape_repeats_per_month


def followed(needed_at_target: list[int], bin_seconds: float, policy: FleetPolicy) -> list[int]:
    """Replicas an autoscaler holds: up at once, down only after its hold (the scale-down delay, or one
    start-up with autoscaling.slo) has seen less."""
    hold_bins = max(0, math.ceil(policy.hold_seconds / bin_seconds))
    out = []
    for index in range(len(needed_at_target)):
        window = needed_at_target[max(0, index - hold_bins) : index + 1]
        out.append(max(policy.min_replicas, *window))
    return out


def _rented_gpu_seconds(
    replicas: list[int], bin_seconds: float, gpus_per_replica: int, cold_start: float
) -> float:
    """GPU-seconds of a replica curve, each start paying its cold start (GPUs held while loading)."""
    starts = sum(max(0, b - a) for a, b in zip([0, *replicas], replicas, strict=False))
    return (sum(replicas) * bin_seconds + starts * cold_start) * gpus_per_replica


def plan_rent_vs_buy(
    shape: LoadShape,
    requests_per_second_per_replica: float,
    gpus_per_replica: int,
    local: LocalPrice,
    rent_usd_per_gpu_hour: float,
    policy: FleetPolicy | None = None,
) -> RentBuyPlan:
    """Three ways to serve the shape, repeated for a month, each with its monthly bill."""
    policy = policy or FleetPolicy()
    if rent_usd_per_gpu_hour <= 0:
        raise PlanError("--rent-usd-per-gpu-hour must be above 0")
    if requests_per_second_per_replica <= 0:
        raise PlanError("one replica serves no requests within the SLO")
    if not 0 < policy.target_utilization <= 1:
        raise PlanError("--target-utilization must be in (0, 1]")
    per_replica = requests_per_second_per_replica
    needed = [math.ceil(rate / per_replica - 1e-9) for rate in shape.requests_per_second]
    at_target = [
        math.ceil(rate / (per_replica * policy.target_utilization) - 1e-9)
        for rate in shape.requests_per_second
    ]
    held = followed(at_target, shape.bin_seconds, policy)
    repeats = HOURS_PER_MONTH * 3600 / shape.duration_seconds
    busy_hours = sum(needed) * shape.bin_seconds * gpus_per_replica / 3600 * repeats
    local_usd, rent_usd = local.usd_per_gpu_hour, rent_usd_per_gpu_hour

    def option(name: str, owned_replicas: int, rents: bool = True) -> Option:
        owned_gpus = owned_replicas * gpus_per_replica
        spill = [max(0, r - owned_replicas) if rents else 0 for r in held]
        rented_hours = (
            _rented_gpu_seconds(spill, shape.bin_seconds, gpus_per_replica, policy.cold_start_seconds)
            / 3600
            * repeats
        )
        owned_hours = owned_gpus * HOURS_PER_MONTH
        return Option(
            name,
            owned_gpus,
            owned_hours,
            rented_hours,
            owned_hours * local_usd + rented_hours * rent_usd,
            busy_hours,
        )

    peak = max(max(needed), policy.min_replicas)
    buy_peak = option("buy for the peak", peak, rents=False)
    rent_all = option("rent everything", 0)
    # The cheapest split: each owned replica costs a full month and saves the rent of the hours it covers.
    best = min((option("buy the baseline, rent the spikes", n) for n in range(0, max(held) + 1)),
               key=lambda o: (o.usd_per_month, -o.owned_gpus))  # fmt: skip
    return RentBuyPlan(
        shape=shape,
        gpus_per_replica=gpus_per_replica,
        requests_per_second_per_replica=per_replica,
        local=local,
        rent_usd_per_gpu_hour=rent_usd,
        needed_replicas=tuple(needed),
        followed_replicas=tuple(held),
        buy_for_peak=buy_peak,
        buy_baseline_rent_spikes=best,
        rent_all=rent_all,
        shape_repeats_per_month=repeats,
    )
