"""The burst controller in a real operator process against the real control plane.

The provider is the in-process test double (tests/support/burst_plugin.py) until issue 9's fake provider
server can stand in; Kubernetes is real: Unschedulable pods, finalizers, SSA status, Events, Secrets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster.controlplane import wait_crd_established
from tests.support.burst_cleanup import remove_burst_objects
from tests.support.cluster import (
    STATE_DIR,
    TEST_BURST_ENV,
    ClusterHandle,
    OperatorProcess,
    condition,
    wait_for,
)
from tests.support.manifests import llmserve

pytestmark = pytest.mark.cluster

KEY = "test-provider-key-d41d8cd98f00b204"
STATE_FILE = Path(f"{STATE_DIR}-burst-provider.json")


@pytest.fixture(scope="module")
def burst_operator(cluster: ClusterHandle, operator_process: OperatorProcess) -> Iterator[dict[str, Any]]:
    """The shared operator, restarted with the provider test double plugged in and a fast burst tick."""
    system = cluster.create_namespace("burst-system")
    cluster.kubectl("create", "secret", "generic", "runpod-key", "-n", system, f"--from-literal=apiKey={KEY}")
    wait_crd_established(cluster.kubectl, "burstpools.llmserve.dev")
    STATE_FILE.unlink(missing_ok=True)
    extra = {
        "LLMSERVE_BURST_PLUGIN_RUNPOD": "tests.support.burst_plugin:make",
        "LLMSERVE_TEST_BURST_STATE": str(STATE_FILE),
        "LLMSERVE_TEST_BURST_KEY": KEY,
        "LLMSERVE_TEST_BURST_PROVISIONING_SECONDS": "0.5",
        **TEST_BURST_ENV,
        "LLMSERVE_OPERATOR_NAMESPACE": system,
        "LLMSERVE_CLUSTER_ID": "testcluster",
    }
    os.environ.update(extra)
    operator_process.restart()
    try:
        yield {"system": system, "operator": operator_process}
    finally:
        try:
            # While the operator still has the provider plugged in: only it can finish the pools' finalizers.
            remove_burst_objects(cluster, [])
        finally:
            for key in extra:
                os.environ.pop(key, None)
            operator_process.restart()


@pytest.fixture(autouse=True)
def no_burst_leftovers(
    cluster: ClusterHandle, burst_operator: dict[str, Any], namespace: str
) -> Iterator[None]:
    """Each test starts and ends with no BurstPool, bursting LLMServe or live instance, pass or fail, so
    one test's rented instances never show up in the next one's counts or burn rate."""
    assert live_instances() == [], "an earlier test left rented instances behind"
    yield
    restore = json.dumps({"stringData": {"apiKey": KEY}})  # a test that revoked it may have failed first
    cluster.kubectl(
        "patch", "secret", "runpod-key", "-n", burst_operator["system"], "--type=merge", "-p", restore
    )
    remove_burst_objects(cluster, [namespace])
    assert live_instances() == [], "rented instances outlived their pools"


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmserve.dev/v1alpha1",
        "kind": "BurstPool",
        "metadata": {"name": name},
        "spec": {
            "provider": "runpod",
            "credentialsSecret": {"name": "runpod-key"},
            "gpuPreferences": [{"gpuType": "H100", "maxUsdPerHour": 3}],
            "maxHourlySpend": 10,
            "monthlyBudget": 500,
            "allowedNamespaces": {},
            **spec,
        },
    }


def bursting(pool_name: str, replicas: int = 2) -> dict[str, Any]:
    # A GPU product no node has: every local replica stays Unschedulable, as on a full cluster.
    return llmserve(
        replicas=replicas,
        maxReplicas=4,
        autoscaling={"enabled": False},
        resources={"gpus": 1, "gpuProduct": "NVIDIA-NOT-IN-THIS-CLUSTER"},
        burst={"pool": pool_name, "maxReplicas": 2, "unschedulableSeconds": 0, "scaleInDelaySeconds": 0},
    )


def provider_state() -> dict[str, Any]:
    return (
        dict(json.loads(STATE_FILE.read_text())) if STATE_FILE.exists() else {"instances": {}, "creates": []}
    )


def live_instances() -> list[str]:
    return [i["name"] for i in provider_state()["instances"].values() if i["live"]]


def apply_pool(cluster: ClusterHandle, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(manifest))


def test_unschedulable_replicas_are_rented_and_deleting_the_llmserve_leaves_none(
    cluster: ClusterHandle, burst_operator: dict[str, Any], namespace: str
) -> None:
    apply_pool(cluster, pool("itest-rent"))
    cluster.apply(bursting("itest-rent"), namespace)

    def rented() -> dict[str, Any] | None:
        obj = cluster.get("llmserve", "llama", namespace)
        burst = ((obj or {}).get("status") or {}).get("burst") or {}
        return obj if burst.get("readyReplicas") == 2 else None

    obj = wait_for(rented, timeout=90, message="2 burst replicas ready")
    burst = obj["status"]["burst"]
    assert (burst["localReadyReplicas"], burst["unschedulableReplicas"], burst["pool"]) == (
        0,
        2,
        "itest-rent",
    )
    assert condition(obj, "BurstAllowed")["status"] == "True"
    assert condition(obj, "BudgetExhausted")["status"] == "False"
    full = json.loads(
        cluster.kubectl(
            "get", "llmserve", "llama", "-n", namespace, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    managers = {m["manager"] for m in full["metadata"]["managedFields"] if m.get("subresource") == "status"}
    assert "llmserve-burst" in managers

    bp = cluster.get("burstpool", "itest-rent")
    assert bp is not None
    assert bp["status"]["instanceCount"] == 2 and bp["status"]["readyInstances"] == 2
    assert bp["status"]["burnRateUsdPerHour"] == pytest.approx(4.98)
    assert condition(bp, "CredentialsValid")["status"] == "True"
    names = sorted(i["name"] for i in bp["status"]["instances"])
    assert sorted(live_instances()) == names
    # Each instance got its own API key, in a Secret, passed to the engine as vLLM's --api-key.
    for name in names:
        assert cluster.get("secret", f"burst-{name}", burst_operator["system"]) is not None
        assert provider_state()["env"][name] == ["--api-key"]
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=LLMServe"
    ).stdout
    assert "BurstScaleUp" in events
    assert "llmserve_burst_instances" in burst_operator["operator"].metrics_text()

    cluster.kubectl("delete", "llmserve", "llama", "-n", namespace, "--wait=false")
    wait_for(lambda: cluster.get("llmserve", "llama", namespace) is None, timeout=60, message="LLMServe gone")
    assert live_instances() == []
    bp = cluster.get("burstpool", "itest-rent")
    assert bp is not None and bp["status"].get("instances", []) == []
    log = burst_operator["operator"].log_path.read_text(errors="replace")
    assert KEY not in log and "VLLM_API_KEY=" not in log


def test_namespace_the_pool_does_not_select_is_refused_with_a_condition(
    cluster: ClusterHandle, burst_operator: dict[str, Any], namespace: str
) -> None:
    apply_pool(cluster, pool("itest-allowed", allowedNamespaces={"matchLabels": {"burst": "allowed"}}))
    cluster.apply(bursting("itest-allowed"), namespace)

    def refused() -> dict[str, Any]:
        return condition(cluster.get("llmserve", "llama", namespace), "BurstAllowed")

    cond = wait_for(
        lambda: refused() if refused().get("status") == "False" else None, timeout=60, message="refusal"
    )
    assert cond["reason"] == "NamespaceNotAllowed" and namespace in cond["message"]
    bp = cluster.get("burstpool", "itest-allowed")
    assert bp is not None and not (bp.get("status") or {}).get("instances")


def test_deleting_a_pool_with_a_revoked_key_waits_and_finishes_once_restored(
    cluster: ClusterHandle, burst_operator: dict[str, Any], namespace: str
) -> None:
    system = burst_operator["system"]
    apply_pool(cluster, pool("itest-revoke"))
    cluster.apply(bursting("itest-revoke", replicas=1), namespace)
    wait_for(
        lambda: (
            ((cluster.get("burstpool", "itest-revoke") or {}).get("status") or {}).get("readyInstances") == 1
        ),
        timeout=90,
        message="one instance ready",
    )
    rented = live_instances()
    assert len(rented) == 1
    patch = json.dumps({"stringData": {"apiKey": "a-revoked-key"}})
    cluster.kubectl("patch", "secret", "runpod-key", "-n", system, "--type=merge", "-p", patch)
    cluster.kubectl("delete", "burstpool", "itest-revoke", "--wait=false")

    def says_key_refused() -> bool:
        bp = cluster.get("burstpool", "itest-revoke")
        return condition(bp, "CredentialsValid").get("status") == "False"

    wait_for(says_key_refused, timeout=60, message="CredentialsValid=False while deleting")
    assert live_instances() == rented  # nothing forgotten, nothing claimed terminated
    bp = cluster.get("burstpool", "itest-revoke")
    assert bp is not None and len(bp["status"]["instances"]) == 1

    cluster.kubectl("patch", "secret", "runpod-key", "-n", system, "--type=merge", "-p",
                    json.dumps({"stringData": {"apiKey": KEY}}))  # fmt: skip
    wait_for(lambda: cluster.get("burstpool", "itest-revoke") is None, timeout=90, message="pool gone")
    assert live_instances() == []


def test_budget_reached_refuses_the_create_and_the_model_keeps_serving_locally(
    cluster: ClusterHandle, burst_operator: dict[str, Any], namespace: str
) -> None:
    # A budget too small for even the reserve of one A100: no create at all.
    apply_pool(
        cluster,
        pool(
            "itest-budget",
            gpuPreferences=[{"gpuType": "A100", "maxUsdPerHour": 1.5}],
            maxHourlySpend=1.5,
            monthlyBudget=0.01,
        ),
    )
    manifest = llmserve(
        replicas=5,
        maxReplicas=6,
        autoscaling={"enabled": False},
        resources={"gpus": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},  # 2 nodes x 4 GPUs: room for 4 of 5
        burst={"pool": "itest-budget", "maxReplicas": 1, "unschedulableSeconds": 0},
    )
    cluster.apply(manifest, namespace)

    def exhausted() -> dict[str, Any] | None:
        obj = cluster.get("llmserve", "llama", namespace)
        return obj if condition(obj, "BudgetExhausted").get("status") == "True" else None

    obj = wait_for(exhausted, timeout=90, message="BudgetExhausted=True on the LLMServe")
    assert "monthlyBudget" in condition(obj, "BudgetExhausted")["message"]
    ready = wait_for(
        lambda: (
            (o := cluster.get("llmserve", "llama", namespace))
            and condition(o, "Ready").get("status") == "True"
            and o
        ),
        timeout=60,
        message="served by local replicas",
    )
    assert ready["status"]["readyReplicas"] >= 1
    bp = cluster.get("burstpool", "itest-budget")
    assert bp is not None and condition(bp, "BudgetAvailable")["status"] == "False"
    assert not bp["status"].get("instances")
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=BudgetExhausted"
    ).stdout
    assert "BudgetExhausted" in events
    cluster.kubectl("delete", "llmserve", "llama", "-n", namespace, "--wait=false")
