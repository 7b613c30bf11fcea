"""A BurstPool's summary fields and conditions (CredentialsValid, ProviderReachable, BudgetAvailable, Ready)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from llmserve.api.base import Condition
from llmserve.api.burstpool import BurstPoolSpec, BurstPoolStatus
from llmserve.burst.budget import Billing
from llmserve.burst.types import ErrorKind, ProviderError

Status = Literal["True", "False", "Unknown"]


@dataclass
class Observation:
    status: Status
    reason: str
    message: str = ""


class PoolHealth:
    """What the latest provider calls said about the credentials and the provider's reachability."""

    def __init__(self) -> None:
        self.credentials = Observation("Unknown", "NotChecked", "no provider call has answered yet")
        self.reachable = Observation("Unknown", "NotChecked", "no provider call has answered yet")
        self.balance_problem = ""

    def answered(self) -> None:
        self.credentials = Observation("True", "Accepted", "the provider accepted the API key")
        self.reachable = Observation("True", "Answering", "the provider API answered")

    def failed(self, err: ProviderError) -> None:
        if err.kind is ErrorKind.AUTH:
            # Kept state is untouched: instances stay recorded and are terminated once the key works again.
            self.credentials = Observation(
                "False",
                "KeyRejected",
                "the provider refused the API key; recorded instances are kept and retried",
            )
            self.reachable = Observation("True", "Answering", "the provider API answered (refusing the key)")
        elif err.kind in (ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS):
            self.reachable = Observation(
                "False", "Unreachable", f"the provider API did not answer: {err.kind.value}"
            )
        elif err.kind is ErrorKind.RATE_LIMITED:
            self.reachable = Observation(
                "True", "RateLimited", "the provider asked to slow down; backing off"
            )
        elif err.kind is ErrorKind.BALANCE:
            self.balance_problem = "the provider account has no balance left"


def _condition(type_: str, obs: Observation, now: datetime, previous: Mapping[str, Condition]) -> Condition:
    before = previous.get(type_)
    since = before.last_transition_time if before is not None and before.status == obs.status else now
    return Condition(
        type=type_,
        status=obs.status,
        reason=obs.reason,
        message=obs.message,
        last_transition_time=since.replace(microsecond=0),
    )


def finish_status(
    status: BurstPoolStatus,
    spec: BurstPoolSpec,
    health: PoolHealth,
    billing: Sequence[Billing],
    now: datetime,
    budget_refusals: Mapping[str, str],
) -> None:
    """Fills the summary fields the printer columns show, and the conditions."""
    status.instance_count = len(status.instances)
    status.ready_instances = sum(
        1 for r in status.instances if r.ready_since and not r.draining_since and not r.terminating_since
    )
    status.burn_rate_usd_per_hour = round(sum(b.usd_per_hour for b in billing), 6)
    status.models = [
        m
        for m in status.models
        if m.spent_this_month_usd > 0 or any(r.owner == m.owner for r in status.instances) or m.next_slot
    ]
    if budget_refusals:
        budget = Observation("False", "BudgetExhausted", next(iter(budget_refusals.values())))
    elif health.balance_problem:
        budget = Observation("False", "NoBalance", health.balance_problem)
    else:
        left = spec.monthly_budget - status.spent_this_month_usd
        budget = Observation(
            "True",
            "WithinBudget",
            f"{left:.2f} USD left this month; burning {status.burn_rate_usd_per_hour:.2f} of {spec.max_hourly_spend:.2f} USD/h",
        )
    previous = {c.type: c for c in status.conditions}
    conditions = [
        _condition("CredentialsValid", health.credentials, now, previous),
        _condition("ProviderReachable", health.reachable, now, previous),
        _condition("BudgetAvailable", budget, now, previous),
    ]
    failing = [c for c in conditions if c.status == "False"]
    if failing:
        ready = Observation("False", failing[0].reason, failing[0].message)
    elif any(c.status == "Unknown" for c in conditions):
        ready = Observation("Unknown", "Checking", "waiting for the provider's first answer")
    else:
        ready = Observation(
            "True", "Ready", f"{status.ready_instances}/{status.instance_count} instances serving"
        )
    conditions.append(_condition("Ready", ready, now, previous))
    status.conditions = conditions
