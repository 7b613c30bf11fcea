"""The burst state machine, scenario by scenario, against the in-memory provider test double and a fake clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from llmserve.api.burstpool import BurstPoolSpec, BurstPoolStatus
from llmserve.burst.engine import PoolController, StepResult
from llmserve.burst.planner import REQUESTED, Demand
from llmserve.burst.types import LaunchSpec, Offer, Phase
from tests.support.burst_chaos import OFFERS, InMemoryStore
from tests.support.inmemory_provider import Crash, FakeClock, InMemoryProvider

CLUSTER = "prod-east"
T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def spec(**overrides: Any) -> BurstPoolSpec:
    raw: dict[str, Any] = {
        "provider": "runpod",
        "credentialsSecret": {"name": "key"},
        "gpuPreferences": [
            {"gpuType": "H100", "maxUsdPerHour": 3.0},
            {"gpuType": "A100", "maxUsdPerHour": 1.8},
        ],
        "maxHourlySpend": 20,
        "monthlyBudget": 1000,
        "provisioningTimeoutSeconds": 300,
        "drainSeconds": 30,
        "orphanGraceSeconds": 600,
        "allowedNamespaces": {},
    }
    return BurstPoolSpec.model_validate(raw | overrides)


class Rig:
    def __init__(self, pool: BurstPoolSpec | None = None, provisioning_seconds: float = 60) -> None:
        self.clock = FakeClock(T0)
        self.provider = InMemoryProvider(self.clock, OFFERS, provisioning_seconds=provisioning_seconds)
        self.store = InMemoryStore()
        self.spec = pool or spec()
        self.controller = self.restart()

    def restart(self) -> PoolController:
        self.controller = PoolController(
            pool="p",
            spec=self.spec,
            cluster_id=CLUSTER,
            provider=self.provider,
            store=self.store,
            clock=self.clock,
        )
        return self.controller

    def step(self, demands: list[Demand], seconds: float = 10, **kwargs: Any) -> StepResult:
        self.provider.advance(seconds)
        kwargs.setdefault("demands_synced", True)
        return asyncio.run(self.controller.step({d.owner: d for d in demands}, **kwargs))

    @property
    def status(self) -> BurstPoolStatus:
        return self.store.saved

    def condition(self, type_: str) -> Any:
        return next(c for c in self.status.conditions if c.type == type_)


def need(unschedulable: int, ready: int = 1, owner: str = "ai/llama", **kw: Any) -> Demand:
    return Demand(owner=owner, max_replicas=kw.pop("max_replicas", 3), unschedulable_replicas=unschedulable,
                  local_ready_replicas=ready, scale_in_delay_seconds=kw.pop("delay", 120), **kw)  # fmt: skip


def test_rents_the_shortfall_from_the_cheapest_fitting_offer_with_the_intent_recorded_first() -> None:
    rig = Rig()
    seen_at_create: list[list[str]] = []
    create = rig.provider.create

    async def spying_create(launch: LaunchSpec, offer: Offer) -> Any:
        seen_at_create.append([r.name for r in rig.store.saved.instances])
        return await create(launch, offer)

    rig.provider.create = spying_create  # type: ignore[method-assign]
    result = rig.step([need(2)])
    names = [c.name for c in rig.provider.creates]
    assert len(names) == 2 and all(c.offer_usd_per_hour == 2.49 for c in rig.provider.creates)
    assert seen_at_create[0] == names[:1] and seen_at_create[1] == names  # on record before the call
    assert [e.reason for e in result.events].count("BurstScaleUp") == 2
    assert {r.id for r in rig.status.instances} == set(rig.provider.instances)


def test_capacity_error_moves_to_the_next_offer_and_never_above_a_cap() -> None:
    rig = Rig()
    rig.provider.faults.sold_out |= {"h100-a", "h100-b"}
    rig.step([need(1)])
    assert [c.offer_usd_per_hour for c in rig.provider.creates] == [1.19]  # A100, not the 3.99 H100
    assert rig.status.instances[0].gpu_type == "A100"


def test_lost_create_response_is_adopted_not_duplicated() -> None:
    rig = Rig()
    rig.provider.faults.lose_next_create_response = True
    rig.step([need(1)])
    assert rig.status.instances[0].phase == REQUESTED and rig.status.instances[0].id is None
    rig.step([need(1)], seconds=60)  # past the backoff
    assert len(rig.provider.instances) == 1
    assert rig.status.instances[0].id == next(iter(rig.provider.instances))


@pytest.mark.parametrize("where", ["crash_before_call", "crash_after_call"])
def test_operator_killed_around_the_create_makes_no_duplicate(where: str) -> None:
    rig = Rig()
    calls_before_create = 1 + len(rig.spec.gpu_preferences) + 1  # list, offers per preference, create
    setattr(rig.provider.faults, where, calls_before_create)
    with pytest.raises(Crash):
        rig.step([need(1)])
    rig.restart()
    for _ in range(30):
        rig.step([need(1)])
    assert len(rig.provider.live(CLUSTER)) == 1
    assert [r.id for r in rig.status.instances] == [i.id for i in rig.provider.live(CLUSTER)]


def test_budget_cap_refuses_the_create_and_says_so_once() -> None:
    rig = Rig(spec(maxHourlySpend=3, monthlyBudget=1000))
    first = rig.step([need(2)])
    assert len(rig.provider.creates) == 1  # the second would lift the burn to 4.98 USD/h
    second = rig.step([need(2)])
    assert rig.condition("BudgetAvailable").status == "False"
    assert "maxHourlySpend" in rig.condition("BudgetAvailable").message
    third = rig.step([need(2)])
    events = [e.reason for e in first.events + second.events + third.events]
    assert events.count("BudgetExhausted") == 1


def test_month_budget_nearly_spent_drains_and_stops_creating() -> None:
    rig = Rig(spec(monthlyBudget=2))
    rig.step([need(1)])
    assert len(rig.provider.creates) == 1
    for _ in range(100):
        rig.step([need(1)], seconds=30)
    assert rig.provider.live(CLUSTER) == []
    assert rig.provider.month_spend(CLUSTER) <= 2.0
    assert rig.condition("BudgetAvailable").status == "False"


def test_instance_not_serving_within_the_provisioning_timeout_is_terminated() -> None:
    rig = Rig()
    rig.provider.faults.stuck_next_create = True
    rig.step([need(1)])
    stuck = rig.status.instances[0].id
    for _ in range(31):
        rig.step([need(1)])
    assert rig.provider.instances[stuck].phase is Phase.TERMINATED
    assert stuck not in {r.id for r in rig.status.instances}
    assert len(rig.provider.live(CLUSTER)) == 1  # its replacement


def test_a_local_replica_becoming_ready_drains_one_burst_replica_at_once() -> None:
    rig = Rig()
    rig.step([need(2, ready=1)])
    for _ in range(7):
        rig.step([need(2, ready=1)])
    assert all(r.ready_since for r in rig.status.instances)
    rig.step([need(1, ready=2)])  # one pending pod got a GPU
    draining = [r for r in rig.status.instances if r.draining_since]
    assert len(draining) == 1 and "local replica became Ready" in (draining[0].reason or "")
    for _ in range(4):
        rig.step([need(1, ready=2)])
    assert len(rig.provider.live(CLUSTER)) == 1 and len(rig.status.instances) == 1


def test_fewer_wanted_waits_for_the_scale_in_delay() -> None:
    rig = Rig()
    for _ in range(8):
        rig.step([need(1, delay=120)])
    rig.step([need(0, delay=120)])
    fewer_wanted_since = rig.clock.now()
    assert not rig.status.instances[0].draining_since
    for _ in range(12):
        rig.step([need(0, delay=120)])
    # Deterministic (fake clock): the instance is draining, not yet gone, and began no sooner than the delay.
    [instance] = rig.status.instances
    assert instance.reason == "fewer burst replicas wanted" and instance.draining_since
    drain_started = datetime.fromisoformat(instance.draining_since.replace("Z", "+00:00"))
    assert (drain_started - fewer_wanted_since).total_seconds() >= 120


def test_price_rise_above_the_cap_drains_the_instance() -> None:
    rig = Rig()
    for _ in range(8):
        rig.step([need(2)])
    rig.provider.raise_price(CLUSTER, 0, 2.0)  # 2.49 -> 4.98, above the 3.0 cap
    rig.step([need(2)])
    draining = [r for r in rig.status.instances if r.draining_since]
    assert len(draining) == 1 and draining[0].usd_per_hour == pytest.approx(4.98)
    assert "above its cap" in (draining[0].reason or "")


def test_revoked_key_keeps_every_instance_recorded_until_it_can_terminate_them() -> None:
    rig = Rig()
    for _ in range(8):
        rig.step([need(2)])
    rig.provider.faults.auth_revoked = True
    for _ in range(10):
        rig.step([], deleting=True)
    assert len(rig.status.instances) == 2 and len(rig.provider.live(CLUSTER)) == 2
    assert rig.condition("CredentialsValid").status == "False"
    rig.provider.faults.auth_revoked = False
    for _ in range(40):
        rig.step([], deleting=True)
    assert rig.status.instances == [] and rig.provider.live(CLUSTER) == []
    assert rig.condition("CredentialsValid").status == "True"


def test_terminate_failures_keep_the_instance_recorded_until_the_provider_confirms() -> None:
    rig = Rig()
    for _ in range(8):
        rig.step([need(1)])
    rig.provider.faults.terminate_failures = 3
    rig.step([], deleting=True)
    assert len(rig.status.instances) == 1
    for _ in range(30):
        rig.step([], deleting=True)
    assert rig.status.instances == [] and rig.provider.live(CLUSTER) == []


def test_reaper_terminates_unwanted_instances_of_this_cluster_only_after_sync_and_grace() -> None:
    rig = Rig()
    leaked = rig.provider.add_unrecorded(f"llms-{CLUSTER}-0123456789-7", CLUSTER)
    foreign = rig.provider.add_unrecorded("llms-other-cluster-0123456789-7", "other-cluster")
    rig.step([], demands_synced=True)
    assert leaked.billing  # younger than the grace period
    for _ in range(70):
        rig.step([], demands_synced=False)
    assert leaked.billing  # the view of the LLMServes is not complete: nothing is reaped
    rig.step([], demands_synced=True)
    assert not leaked.billing and foreign.billing


def test_namespace_not_allowed_rents_nothing() -> None:
    rig = Rig()
    rig.step([need(2, allowed=False)])
    assert rig.provider.creates == []


def test_clock_jump_forward_ends_instances_cleanly_and_bills_the_gap() -> None:
    rig = Rig()
    for _ in range(8):
        rig.step([need(1)])
    rig.step([need(0, delay=0)], seconds=86400)
    assert rig.status.spent_this_month_usd == pytest.approx(rig.provider.month_spend(CLUSTER), rel=0.01)
    for _ in range(5):
        rig.step([need(0, delay=0)])
    assert rig.provider.live(CLUSTER) == []


def test_provider_outage_changes_nothing_recorded_and_says_unreachable() -> None:
    rig = Rig()
    for _ in range(8):
        rig.step([need(1)])
    before = [r.id for r in rig.status.instances]
    rig.provider.faults.outage = True
    for _ in range(5):
        rig.step([need(0)], seconds=60)
    assert [r.id for r in rig.status.instances] == before
    assert rig.condition("ProviderReachable").status == "False"
    assert rig.status.spent_this_month_usd > 0  # the ledger keeps integrating what still bills
