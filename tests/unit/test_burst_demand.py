"""What the burst controller reads from the cluster: Unschedulable time, namespace selectors, the Demand."""

from datetime import UTC, datetime, timedelta
from typing import Any

from llmserve.api import LLMServeSpec
from llmserve.api.burstpool import BurstPoolSpec, LabelSelector
from llmserve.controller.burst_demand import demand_of, not_allowed_message, selects, unschedulable_for

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def pod(
    unschedulable_for_seconds: float | None, ready: bool = False, deleting: bool = False
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if unschedulable_for_seconds is not None:
        since = (NOW - timedelta(seconds=unschedulable_for_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "lastTransitionTime": since, "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."})  # fmt: skip
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    meta = {"name": "p", "deletionTimestamp": "2026-11-30T11:00:00Z" if deleting else None}
    return {
        "metadata": meta,
        "status": {"phase": "Pending" if unschedulable_for_seconds else "Running", "conditions": conditions},
    }


def test_only_pods_unschedulable_long_enough_count() -> None:
    pods = [pod(120), pod(30), pod(None, ready=True), pod(300, deleting=True)]
    assert unschedulable_for(pods, NOW, 60) == 1
    assert unschedulable_for(pods, NOW, 0) == 2


def test_label_selector_semantics() -> None:
    selector = LabelSelector.model_validate(
        {"matchLabels": {"team": "ai"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]},
                                                            {"key": "frozen", "operator": "DoesNotExist"}]}
    )  # fmt: skip
    assert selects(selector, {"team": "ai", "tier": "prod"})
    assert not selects(selector, {"team": "ai", "tier": "dev"})
    assert not selects(selector, {"team": "ai", "tier": "prod", "frozen": "yes"})
    assert selects(LabelSelector(), {})  # {} selects every namespace


POOL = BurstPoolSpec.model_validate(
    {
        "provider": "runpod",
        "credentialsSecret": {"name": "k"},
        "gpuPreferences": [{"gpuType": "H100", "maxUsdPerHour": 3}],
        "maxHourlySpend": 10,
        "monthlyBudget": 100,
        "allowedNamespaces": {"matchLabels": {"burst": "allowed"}},
    }
)


def test_demand_of_an_llmserve_in_an_allowed_and_a_refused_namespace() -> None:
    spec = LLMServeSpec.model_validate(
        {"model": {"name": "m"}, "replicas": 3, "maxReplicas": 4, "burst": {"pool": "p", "maxReplicas": 2}}
    )
    body = {"metadata": {"name": "llama", "namespace": "ai"}}
    pods = [pod(None, ready=True), pod(90), pod(90)]
    demand = demand_of(body, spec, pods, {"burst": "allowed"}, POOL, NOW)
    assert (demand.owner, demand.unschedulable_replicas, demand.local_ready_replicas) == ("ai/llama", 2, 1)
    assert demand.allowed and demand.max_replicas == 2 and demand.local_desired_replicas == 3
    assert demand.args[:3] == ("m", "--served-model-name", "llama")
    assert not demand_of(body, spec, pods, {}, POOL, NOW).allowed
    message = not_allowed_message("p", POOL, "ai")
    assert "namespace ai" in message and "burst" in message
