"""A Deployment deleted while its LLMServe lives is applied again, with the LLMServe's current
spec.replicas, and the model is Ready again; until then Ready and Progressing say DeploymentMissing. The
children the garbage collector deletes with their LLMServe are not (real control plane, real collector)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster

# The test's own finalizer: it holds the deleted Deployment (terminating) until the test releases it, so
# the state the conditions must report lasts until it has been read, however fast the operator restores it.
HOLD = "llmserve.dev/test-hold"


def deployment(cluster: ClusterHandle, namespace: str) -> dict[str, Any]:
    return cluster.get("deployment", "llama", namespace) or {}


def recreated_events(cluster: ClusterHandle, namespace: str) -> list[dict[str, Any]]:
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                             "involvedObject.kind=LLMServe,reason=DeploymentRecreated").stdout  # fmt: skip
    return list(json.loads(events)["items"])


def test_a_deleted_deployment_comes_back_with_the_current_replicas_and_the_model_ready_again(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    original = deployment(cluster, namespace)
    assert original["spec"]["replicas"] == 1
    hold = json.dumps({"metadata": {"finalizers": [HOLD]}})
    cluster.kubectl("patch", "deployment/llama", "-n", namespace, "--type=merge", "-p", hold)
    try:
        cluster.kubectl("delete", "deployment/llama", "-n", namespace, "--wait=false")
        missing = wait_for(
            lambda: (c := condition(cluster.get("llmserve", "llama", namespace), "Ready")).get("reason") == "DeploymentMissing" and c,
            timeout=30, message="Ready=False with reason DeploymentMissing",
        )  # fmt: skip
        assert missing["status"] == "False"
        assert missing["message"].startswith("Deployment llama is being deleted: 1/1 replicas ready")
        progressing = condition(cluster.get("llmserve", "llama", namespace), "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("True", "DeploymentMissing")
        assert "Deployment llama is being deleted" in progressing["message"]

        # Meanwhile spec.replicas moves through the scale subresource, as the autoscaler or the gateway
        # would write it. The operator's spec-change apply lands on the terminating Deployment (seen
        # below), so only the restore can bring a Deployment back, and it must carry 2, not the 1 the
        # deleted one was created with.
        cluster.kubectl("scale", "llms/llama", "-n", namespace, "--replicas=2")
        wait_for(lambda: deployment(cluster, namespace).get("spec", {}).get("replicas") == 2, timeout=30,
                 message="the spec change applied to the held Deployment")  # fmt: skip
        assert deployment(cluster, namespace)["metadata"]["uid"] == original["metadata"]["uid"]
        assert not recreated_events(cluster, namespace)
    finally:
        release = json.dumps({"metadata": {"finalizers": None}})
        cluster.kubectl(
            "patch", "deployment/llama", "-n", namespace, "--type=merge", "-p", release, check=False
        )

    # Gone now: the operator applies it again, a new object owned by the LLMServe, with the current replicas.
    restored = wait_for(
        lambda: (d := deployment(cluster, namespace)) and d["metadata"]["uid"] != original["metadata"]["uid"] and d,
        timeout=30, message="the Deployment applied again",
    )  # fmt: skip
    assert restored["spec"]["replicas"] == 2
    assert not restored["metadata"].get("deletionTimestamp")
    owner = cluster.get("llmserve", "llama", namespace) or {}
    assert [(r["kind"], r["uid"], r.get("controller")) for r in restored["metadata"]["ownerReferences"]] == [
        ("LLMServe", owner["metadata"]["uid"], True)
    ]
    assert restored["spec"]["selector"] == original["spec"]["selector"]
    assert restored["spec"]["template"] == original["spec"]["template"]

    back = wait_ready(cluster, namespace, "llama", 2, timeout=90)
    ready = condition(back, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("True", "Available", "2/2 replicas ready")
    wait_for(lambda: condition(cluster.get("llmserve", "llama", namespace), "Progressing").get("reason") == "Stable",
             timeout=30, message="Progressing=False Stable")  # fmt: skip
    # The replicas serving are the new Deployment's: the old ones went with the deleted one.
    live = [p for p in cluster.list("pods", namespace, back["status"]["selector"])
            if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
    owners = set()
    for pod in live:
        replica_set = (
            cluster.get("replicaset", pod["metadata"]["ownerReferences"][0]["name"], namespace) or {}
        )
        owners |= {r["uid"] for r in replica_set["metadata"]["ownerReferences"]}
    assert (len(live), owners) == (2, {restored["metadata"]["uid"]})

    events = wait_for(lambda: recreated_events(cluster, namespace), timeout=30,
                      message="a DeploymentRecreated Event on the LLMServe")  # fmt: skip
    assert events[0]["message"] == "applied Deployment llama again after its deletion"


def test_a_model_scaled_to_zero_gets_its_deployment_back_at_zero(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    # No replica runs, yet the Deployment is what a wake (the gateway's scale from zero) scales.
    cluster.apply(llmserve(autoscaling={"enabled": False}, minReplicas=0, replicas=0), namespace)
    original = wait_for(lambda: deployment(cluster, namespace), timeout=30, message="the Deployment at 0")
    assert original["spec"]["replicas"] == 0
    wait_for(lambda: condition(cluster.get("llmserve", "llama", namespace), "Ready").get("reason") == "ScaledToZero",
             timeout=30, message="Ready=False ScaledToZero")  # fmt: skip
    cluster.kubectl("delete", "deployment/llama", "-n", namespace, "--wait=false")
    restored = wait_for(
        lambda: (d := deployment(cluster, namespace)) and d["metadata"]["uid"] != original["metadata"]["uid"] and d,
        timeout=30, message="the Deployment applied again",
    )  # fmt: skip
    assert restored["spec"]["replicas"] == 0
    wait_for(lambda: recreated_events(cluster, namespace), timeout=30, message="a DeploymentRecreated Event")
    wait_for(lambda: condition(cluster.get("llmserve", "llama", namespace), "Ready").get("reason") == "ScaledToZero",
             timeout=30, message="Ready=False ScaledToZero again")  # fmt: skip


def child_deleted_outcomes(operator: OperatorProcess, namespace: str) -> dict[tuple[str, str], str]:
    """(LLMServe, kind) -> what the operator made of its child's deletion, from its one log line each."""
    found = re.findall(rf"event=child_deleted namespace={namespace} llmserve=(\S+) kind=(\S+) outcome=(\S+)",
                       operator.log_path.read_text(errors="replace"))  # fmt: skip
    return {(llmserve_name, kind): outcome for llmserve_name, kind, outcome in found}


def test_children_the_garbage_collector_deletes_with_their_llmserve_are_not_applied_again(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    # `gone` is deleted the default way (gone before the collector deletes its children); `going` in the
    # foreground, held by the test's finalizer (deleting while they are deleted).
    for name in ("gone", "going"):
        cluster.apply(llmserve(name, autoscaling={"enabled": False}), namespace)
    for name in ("gone", "going"):
        wait_for(lambda n=name: cluster.get("deployment", n, namespace) and cluster.get("service", n, namespace),
                 timeout=30, message=f"{name}'s Deployment and Service")  # fmt: skip
    present = (cluster.get("llmserve", "going", namespace) or {})["metadata"].get("finalizers") or []
    add_hold = json.dumps({"metadata": {"finalizers": [*present, HOLD]}})
    cluster.kubectl("patch", "llms/going", "-n", namespace, "--type=merge", "-p", add_hold)
    try:
        cluster.kubectl("delete", "llms/gone", "-n", namespace)
        cluster.kubectl("delete", "llms/going", "-n", namespace, "--cascade=foreground", "--wait=false")
        expected = {
            ("gone", "Deployment"): "llmserve_gone",
            ("gone", "Service"): "llmserve_gone",
            ("going", "Deployment"): "llmserve_deleting",
            ("going", "Service"): "llmserve_deleting",
        }
        outcomes = wait_for(lambda: (o := child_deleted_outcomes(operator_process, namespace)).keys() == expected.keys() and o,
                            timeout=60, message="the operator's account of the four deletions")  # fmt: skip
        assert outcomes == expected
        # Each line is written after the decision (and after an apply, had there been one): nothing is back.
        selector = "llmserve.dev/llmserve"
        assert [d["metadata"]["name"] for d in cluster.list("deployments", namespace, selector)] == []
        assert [s["metadata"]["name"] for s in cluster.list("services", namespace, selector)] == []
        assert not recreated_events(cluster, namespace)
    finally:
        holding = cluster.get("llmserve", "going", namespace) or {}
        kept = [f for f in holding.get("metadata", {}).get("finalizers") or [] if f != HOLD]
        release = json.dumps({"metadata": {"finalizers": kept or None}})
        cluster.kubectl("patch", "llms/going", "-n", namespace, "--type=merge", "-p", release, check=False)
    wait_for(lambda: cluster.get("llmserve", "going", namespace) is None, timeout=30, message="going gone")
