"""Ready means the model answers through its Service: one deleted by hand turns Ready False
(ServiceMissing) until the operator has applied it again (real control plane, real EndpointSlices)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster

# The test's own finalizer: it holds the deleted Service (terminating) until the test releases it, so the
# state the condition must report lasts until it has been read, however fast the operator restores it.
HOLD = "llmserve.dev/test-hold"


def ready_condition(cluster: ClusterHandle, namespace: str) -> dict[str, Any]:
    return condition(cluster.get("llmserve", "llama", namespace), "Ready")


def ready_endpoint_addresses(cluster: ClusterHandle, namespace: str) -> list[str]:
    """The ready addresses of the Service's EndpointSlices: what a request through it can reach."""
    return [
        address
        for slice_ in cluster.list("endpointslices", namespace, "kubernetes.io/service-name=llama")
        for endpoint in slice_.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is not False
        for address in endpoint.get("addresses") or []
    ]


def test_ready_is_false_while_the_service_is_deleted_and_true_again_once_the_operator_restores_it(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    original = cluster.get("service", "llama", namespace)
    assert original is not None
    hold = json.dumps({"metadata": {"finalizers": [HOLD]}})
    cluster.kubectl("patch", "service/llama", "-n", namespace, "--type=merge", "-p", hold)
    try:
        cluster.kubectl("delete", "service/llama", "-n", namespace, "--wait=false")
        missing = wait_for(
            lambda: (c := ready_condition(cluster, namespace)).get("reason") == "ServiceMissing" and c,
            timeout=30, message="Ready=False with reason ServiceMissing",
        )  # fmt: skip
        assert missing["status"] == "False"
        assert "1/1 replicas ready, but Service llama is being deleted" in missing["message"]
    finally:
        release = json.dumps({"metadata": {"finalizers": None}})
        cluster.kubectl("patch", "service/llama", "-n", namespace, "--type=merge", "-p", release, check=False)

    # Gone now: the operator applies it again (a new object, the same selector) and Ready follows.
    restored = wait_for(
        lambda: (s := cluster.get("service", "llama", namespace)) and s["metadata"]["uid"] != original["metadata"]["uid"] and s,
        timeout=30, message="the Service applied again",
    )  # fmt: skip
    assert restored["spec"]["selector"] == original["spec"]["selector"]
    assert not restored["metadata"].get("deletionTimestamp")
    back = wait_ready(cluster, namespace, "llama", 1)
    assert (condition(back, "Ready")["status"], condition(back, "Ready")["reason"]) == ("True", "Available")
    pod_ips = [p["status"]["podIP"] for p in cluster.list("pods", namespace, back["status"]["selector"])]
    wait_for(lambda: ready_endpoint_addresses(cluster, namespace) == pod_ips, timeout=30,
             message="the restored Service's EndpointSlice carrying the ready pod")  # fmt: skip

    def recreated_event() -> bool:
        events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                                 "involvedObject.kind=LLMServe,reason=ServiceRecreated").stdout  # fmt: skip
        return bool(json.loads(events)["items"])

    wait_for(recreated_event, timeout=30, message="a ServiceRecreated Event on the LLMServe")
