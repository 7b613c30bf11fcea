"""A model whose launch inputs are unusable (its hfTokenSecret is missing) rents nothing; other models do."""

from __future__ import annotations

import asyncio

from llmserve.api.burstpool import InstanceStatus
from llmserve.burst.engine import PoolController
from llmserve.burst.planner import Demand
from llmserve.burst.provision import LaunchRefused
from llmserve.burst.types import LaunchSpec
from tests.unit.test_burst_engine import CLUSTER, Rig, need


async def refuse_llama(record: InstanceStatus, demand: Demand, base: LaunchSpec) -> LaunchSpec:
    if demand.owner == "ai/llama":
        raise LaunchRefused("spec.model.hfTokenSecret: Secret ai/hf with key HF_TOKEN not found")
    return base


def test_a_refused_launch_creates_nothing_for_that_model_says_so_once_and_spares_the_others() -> None:
    rig = Rig()
    rig.controller = PoolController(pool="p", spec=rig.spec, cluster_id=CLUSTER, provider=rig.provider,
                                    store=rig.store, clock=rig.clock, launcher=refuse_llama)  # fmt: skip
    demands = [need(1), need(1, owner="ai/qwen")]
    first = rig.step(demands)
    refusals = [e for e in first.events if e.reason == "BurstLaunchRefused"]
    assert [(e.owner, e.type) for e in refusals] == [("ai/llama", "Warning")]
    assert "hfTokenSecret" in refusals[0].message
    assert [r.owner for r in rig.status.instances] == ["ai/qwen"]  # no intent left behind for llama
    assert [c.name for c in rig.provider.creates] == [rig.status.instances[0].name]
    second = rig.step(demands)
    assert not [e for e in second.events if e.reason == "BurstLaunchRefused"]  # not every tick
    assert [r.owner for r in rig.status.instances] == ["ai/qwen"]
    assert asyncio.run(rig.store.load()).conditions  # the step still finished its status
