"""One owner per status field, on the real apiserver: concurrent writers never lose each other's fields."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llmserve.api.base import now_utc
from llmserve.controller.status_writer import BURST_MANAGER, apply_status
from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster

WRITES_PER_WRITER = 40
# The hammering writers use managers of their own: the operator's real burst and cost writers run during
# the test and apply their own status (an apply without a condition drops it from that manager's set), so
# borrowing their names would make the test race the very writers it runs beside.
WRITER_A = "llmserve-test-writer-a"
WRITER_B = "llmserve-test-writer-b"


def _condition(type_: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True", "reason": "Hammered", "message": message,
            "lastTransitionTime": now_utc().strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip


async def _hammer(namespace: str, manager: str, condition_type: str) -> list[str]:
    """Applies its own condition WRITES_PER_WRITER times; returns what each answer said it stored."""
    seen = []
    for index in range(WRITES_PER_WRITER):
        stored = await apply_status(
            "llama", namespace, manager, {"conditions": [_condition(condition_type, f"write {index}")]}
        )
        assert stored is not None
        seen.append(condition(stored, condition_type).get("message", ""))
        await asyncio.sleep(0)  # interleave with the other writer
    return seen


def _owned_conditions(obj: dict[str, Any], manager: str) -> set[str]:
    """The condition types `manager` owns, from managedFields (what the apiserver will keep for it)."""
    owned: set[str] = set()
    for entry in obj["metadata"].get("managedFields", []):
        if entry["manager"] == manager and entry.get("subresource") == "status":
            fields = entry["fieldsV1"].get("f:status", {}).get("f:conditions", {})
            owned |= {json.loads(key[2:])["type"] for key in fields if key.startswith("k:")}
    return owned


def test_concurrent_status_writers_keep_every_writers_fields(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real reconciler, autoscaler (interval 1 s) and cost writer write too, while two more writers hammer the object.
    cluster.apply(llmserve(autoscaling={"intervalSeconds": 1}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    wait_for(lambda: condition(cluster.get("llmserve", "llama", namespace), "ScalingActive"), timeout=30,
             message="the autoscaler's first status write")  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))

    async def both() -> tuple[list[str], list[str]]:
        first = _hammer(namespace, WRITER_A, "TestWriterA")
        second = _hammer(namespace, WRITER_B, "TestWriterB")
        # A spec change mid-hammering makes the reconciler write its fields (desired 1 -> 2) meanwhile.
        scale = asyncio.to_thread(cluster.kubectl, "scale", "llms/llama", "-n", namespace, "--replicas=2")
        results = await asyncio.gather(first, second, scale)
        return results[0], results[1]

    first_seen, second_seen = asyncio.run(both())
    # Every answer held the writer's own latest value: no write was lost to a concurrent one.
    assert first_seen == [f"write {i}" for i in range(WRITES_PER_WRITER)]
    assert second_seen == [f"write {i}" for i in range(WRITES_PER_WRITER)]

    obj = wait_ready(cluster, namespace, "llama", 2)  # the reconciler kept writing its own fields
    assert condition(obj, "TestWriterA")["message"] == f"write {WRITES_PER_WRITER - 1}"
    assert condition(obj, "TestWriterB")["message"] == f"write {WRITES_PER_WRITER - 1}"
    assert (
        obj["status"]["desiredReplicas"] == 2
        and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    )
    assert condition(obj, "ScalingActive") and "autoscaling" in obj["status"]

    raw = cluster.kubectl("get", "llms/llama", "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    obj = json.loads(raw)
    assert _owned_conditions(obj, "llmserve-operator") == {"Ready", "Progressing", "Degraded"}
    assert _owned_conditions(obj, "llmserve-autoscaler") == {"AbleToScale", "ScalingActive", "ScalingLimited"}
    assert _owned_conditions(obj, WRITER_A) == {"TestWriterA"}
    assert _owned_conditions(obj, WRITER_B) == {"TestWriterB"}


def test_a_writer_that_stops_reporting_a_condition_removes_only_its_own(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.apply(llmserve(autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    asyncio.run(
        apply_status("llama", namespace, BURST_MANAGER, {"conditions": [_condition("BurstCapacity", "x")]})
    )
    assert condition(cluster.get("llmserve", "llama", namespace), "BurstCapacity")
    asyncio.run(apply_status("llama", namespace, BURST_MANAGER, {"conditions": []}))
    obj = cluster.get("llmserve", "llama", namespace)
    assert not condition(obj, "BurstCapacity")
    assert condition(obj, "Ready")["status"] == "True"  # the reconciler's condition stays


def test_status_of_a_missing_llmserve_is_not_created(
    cluster: ClusterHandle, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    stored = asyncio.run(apply_status("ghost", namespace, BURST_MANAGER, {"conditions": []}))
    assert stored is None
    assert cluster.get("llmserve", "ghost", namespace) is None
