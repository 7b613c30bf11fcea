"""The operator against the real control plane: apply, scale, roll, shortage, validation, restart, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def test_example_becomes_ready_on_gpu_nodes(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "llama-8b-simulated.yaml"))
    obj = wait_ready(cluster, namespace, "llama-8b", 1)
    assert obj["status"]["servedModelName"] == "llama-8b"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    deployment = cluster.get("deployment", "llama-8b", namespace)
    assert deployment is not None
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("LLMServe", "llama-8b", obj["metadata"]["uid"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmserve-operator"
    assert cluster.get("service", "llama-8b", namespace) is not None

    pods = cluster.list("pods", namespace, obj["status"]["selector"])
    assert len(pods) == 1 and pods[0]["spec"]["nodeName"].startswith("gpu-node-")

    table = cluster.kubectl("get", "llms", "-n", namespace).stdout
    assert table.split("\n")[0].split() == ["NAME", "MODEL", "DESIRED", "READY", "STATUS", "AGE"]
    assert "Available" in table
    wide = cluster.kubectl("get", "llms", "-n", namespace, "-o", "wide").stdout
    assert "ENGINE" in wide and "simulator" in wide

    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=LLMServe"
    ).stdout
    assert "Created" in events


def test_kubectl_scale_scales_the_deployment(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    cluster.kubectl("scale", "llms/llama", "-n", namespace, "--replicas=2")
    wait_for(
        lambda: (cluster.get("deployment", "llama", namespace) or {}).get("spec", {}).get("replicas") == 2,
        timeout=30,
        message="deployment scaled to 2",
    )
    obj = wait_ready(cluster, namespace, "llama", 2)
    assert obj["status"]["desiredReplicas"] == 2
    scale = cluster.kubectl(
        "get", "--raw", f"/apis/llmserve.dev/v1alpha1/namespaces/{namespace}/llmserves/llama/scale"
    ).stdout
    assert '"replicas":2' in scale.replace(" ", "")


def test_changing_engine_args_rolls_the_deployment(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    before = {p["metadata"]["name"] for p in cluster.list("pods", namespace, "llmserve.dev/llmserve=llama")}
    cluster.kubectl(
        "patch",
        "llms/llama",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"engine":{"args":["--max-num-seqs=16"]}}}',
    )

    def rolled() -> bool:
        pods = cluster.list("pods", namespace, "llmserve.dev/llmserve=llama")
        ready_new = [
            p
            for p in pods
            if p["metadata"]["name"] not in before
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return len(pods) == 1 and len(ready_new) == 1

    wait_for(rolled, timeout=60, message="old pod replaced by a ready new one")
    deployment = cluster.get("deployment", "llama", namespace)
    assert deployment is not None
    assert "--max-num-seqs=16" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_more_gpus_than_the_cluster_has_reports_the_shortage(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(resources={"gpus": 16}), namespace)

    def degraded() -> dict[str, Any] | None:
        obj = cluster.get("llmserve", "llama", namespace)
        cond = condition(obj, "Degraded")
        return obj if cond.get("reason") == "Unschedulable" else None

    obj = wait_for(degraded, timeout=60, message="Degraded=Unschedulable")
    message = condition(obj, "Degraded")["message"]
    assert "Insufficient nvidia.com/gpu" in message
    assert condition(obj, "Ready")["status"] == "False"
    assert obj["status"]["unschedulableReplicas"] == 1


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"minReplicas": 5, "maxReplicas": 2}, "minReplicas"),
        ({"replicas": 9, "maxReplicas": 4}, "replicas"),
        ({"resources": {"gpus": -1}}, "spec.resources.gpus"),
        ({"engine": {"kind": "tgi"}}, "spec.engine.kind"),
        ({"model": None}, "spec.model"),
        ({"name": "x" * 64}, "metadata.name"),
        ({"name": "llama-3.1-8b"}, "metadata.name"),
        ({"modelCache": {"claimName": "weights", "mountPath": "/dev/shm"}}, "spec.modelCache.mountPath"),
        ({"modelCache": {"claimName": "Weights_1"}}, "spec.modelCache.claimName"),
        ({"resources": {"gpus": 1, "gpuProduct": "NVIDIA H100"}}, "spec.resources.gpuProduct"),
        ({"engine": {"kind": "vllm", "image": "vllm/vllm-openai:latest extra"}}, "spec.engine.image"),
    ],
)
def test_invalid_manifests_are_rejected_naming_the_field(
    cluster: ClusterHandle, namespace: str, spec: dict[str, Any], field: str
) -> None:
    manifest = llmserve("bad")
    for key, value in spec.items():
        if key == "name":
            manifest["metadata"]["name"] = value
        elif value is None:
            del manifest["spec"][key]
        else:
            manifest["spec"][key] = value
    result = cluster.apply(manifest, namespace, check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


def test_a_gpu_less_simulator_replica_runs_on_the_dev_clusters_gpu_nodes(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(resources={"gpus": 0}, autoscaling={"enabled": False}), namespace)
    obj = wait_ready(cluster, namespace, "llama", 1)
    assert condition(obj, "Degraded")["reason"] == "AsExpected"
    pod = cluster.list("pods", namespace, "llmserve.dev/llmserve=llama")[0]
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"].get("limits", {})


def test_operator_restart_readopts_without_churn(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(autoscaling={"enabled": False}, replicas=2), namespace)
    wait_ready(cluster, namespace, "llama", 2)
    deployment = cluster.get("deployment", "llama", namespace)
    assert deployment is not None
    pods = {p["metadata"]["uid"] for p in cluster.list("pods", namespace, "llmserve.dev/llmserve=llama")}

    operator_process.restart()
    # Prove the restarted operator resumed: a spec change (one that renders no different child) must be
    # acted on, i.e. show up as the status' observedGeneration, before "no churn" means anything.
    cluster.kubectl(
        "patch", "llms/llama", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxReplicas":5}}'
    )
    generation = (cluster.get("llmserve", "llama", namespace) or {})["metadata"]["generation"]
    wait_for(
        lambda: (
            ((cluster.get("llmserve", "llama", namespace) or {}).get("status") or {}).get(
                "observedGeneration"
            )
            == generation
        ),
        timeout=30,
        message="the restarted operator observed the spec change",
    )
    wait_ready(cluster, namespace, "llama", 2)

    after = cluster.get("deployment", "llama", namespace)
    assert after is not None
    assert after["metadata"]["uid"] == deployment["metadata"]["uid"]
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"]
    assert {
        p["metadata"]["uid"] for p in cluster.list("pods", namespace, "llmserve.dev/llmserve=llama")
    } == pods


def test_deleting_the_llmserve_garbage_collects_its_children(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(), namespace)
    wait_for(lambda: cluster.get("deployment", "llama", namespace), timeout=30, message="deployment")
    cluster.kubectl("delete", "llms/llama", "-n", namespace)
    wait_for(
        lambda: (
            cluster.get("deployment", "llama", namespace) is None
            and cluster.get("service", "llama", namespace) is None
        ),
        timeout=60,
        message="children collected",
    )
    wait_for(
        lambda: not cluster.list("pods", namespace, "llmserve.dev/llmserve=llama"),
        timeout=60,
        message="engine pods gone",
    )


def test_pods_refused_by_a_quota_degrade_with_an_event(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    # Passes the LLMServe schema, but the namespace's quota forbids GPUs: the ReplicaSet cannot create pods.
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-gpus"},
             "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}}  # fmt: skip
    cluster.apply(quota, namespace)
    cluster.apply(llmserve(), namespace)

    def degraded() -> dict[str, Any] | None:
        obj = cluster.get("llmserve", "llama", namespace)
        return obj if condition(obj, "Degraded").get("reason") == "ReplicaFailure" else None

    obj = wait_for(degraded, timeout=60, message="Degraded=ReplicaFailure")
    assert "exceeded quota" in condition(obj, "Degraded")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=ReplicaFailure"
    ).stdout
    assert "llama" in events
