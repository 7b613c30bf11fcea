"""Money math of a BurstPool: per-second spend integration across UTC months, and the caps before a create."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from llmserve.api.burstpool import BurstPoolStatus, InstanceStatus, ModelBurstStatus

SECONDS_PER_HOUR = 3600.0


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def month_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def month_start(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Billing:
    """One thing that bills now: who it serves and its live price."""

    owner: str
    usd_per_hour: float


def integrate_spend(status: BurstPoolStatus, now: datetime, billing: Iterable[Billing]) -> float:
    """Adds what `billing` cost since status.spendUpdated to this month's spend; returns the USD added.

    Integrated per second at the live prices, so a restart loses nothing: the last integration time is in
    status. A clock that jumps backwards adds nothing and never moves spendUpdated back (no double count
    when it catches up). At a UTC month boundary the part before it closes the old month and the new
    month starts from the part after it, for the pool and for every model.
    """
    billing = list(billing)
    last = parse_time(status.spend_updated)
    if last is None or status.spend_month is None:
        status.spend_updated, status.spend_month = rfc3339(now), month_of(now)
        return 0.0
    if now <= last:
        return 0.0
    boundary = month_start(now)
    if month_of(now) != status.spend_month:
        # Whatever ran before the boundary belonged to the old month: that month is closed, not carried.
        last = max(last, boundary)
        status.spent_this_month_usd = 0.0
        for model in status.models:
            model.spent_this_month_usd = 0.0
        status.spend_month = month_of(now)
    elapsed_hours = (now - last).total_seconds() / SECONDS_PER_HOUR
    added = 0.0
    models = {m.owner: m for m in status.models}
    for item in billing:
        cost = item.usd_per_hour * elapsed_hours
        added += cost
        if item.owner not in models:
            models[item.owner] = ModelBurstStatus(owner=item.owner)
            status.models.append(models[item.owner])
        model = models[item.owner]
        model.spent_this_month_usd += cost
    status.spent_this_month_usd += added
    status.spend_updated = rfc3339(now)
    return added


@dataclass(frozen=True)
class Caps:
    """A pool's money caps, and how long a running burn must stay affordable (covers a drain and a retry)."""

    max_hourly_spend_usd: float
    monthly_budget_usd: float
    reserve_seconds: float

    def reserve_usd(self, burn_usd_per_hour: float) -> float:
        return burn_usd_per_hour * self.reserve_seconds / SECONDS_PER_HOUR


def create_refusal(caps: Caps, burn_usd_per_hour: float, offer_usd_per_hour: float, spent_usd: float) -> str:
    """Why a create at this price must not happen, or "" when it may."""
    projected = burn_usd_per_hour + offer_usd_per_hour
    if projected > caps.max_hourly_spend_usd + 1e-9:
        return f"burn rate would reach {projected:.2f} USD/h, above maxHourlySpend {caps.max_hourly_spend_usd:.2f}"
    if spent_usd + caps.reserve_usd(projected) > caps.monthly_budget_usd:
        return (
            f"this month's spend {spent_usd:.2f} USD plus {caps.reserve_seconds:.0f}s at {projected:.2f} USD/h "
            f"would pass monthlyBudget {caps.monthly_budget_usd:.2f}"
        )
    return ""


def over_budget(caps: Caps, burn_usd_per_hour: float, spent_usd: float) -> bool:
    """True when the running burn can no longer be afforded for the reserve time: instances must go."""
    return burn_usd_per_hour > 0 and spent_usd + caps.reserve_usd(burn_usd_per_hour) > caps.monthly_budget_usd


def back_bill_price_rise(
    status: BurstPoolStatus, record: InstanceStatus, new_usd_per_hour: float, now: datetime
) -> float:
    """Tops up the spend when a price is found higher than recorded; returns the USD added.

    The rise may have happened any time since the price was last seen (an outage or a revoked key can
    hide it for long), and the integration so far used the old price: assuming the worst keeps the
    ledger at or above what the provider bills. Only this month's part counts (the old month is closed).
    """
    seen = parse_time(record.price_seen)
    added = 0.0
    if seen is not None and new_usd_per_hour > record.usd_per_hour and now > seen:
        start = max(seen, month_start(now))
        added = (
            (new_usd_per_hour - record.usd_per_hour)
            * max(0.0, (now - start).total_seconds())
            / SECONDS_PER_HOUR
        )
        status.spent_this_month_usd += added
        for model in status.models:
            if model.owner == record.owner:
                model.spent_this_month_usd += added
    record.price_seen = rfc3339(now)
    return added
