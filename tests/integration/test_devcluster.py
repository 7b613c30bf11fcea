"""The local control plane itself: real versions, and fake GPU nodes that can fail like real ones."""

from __future__ import annotations

import subprocess

import pytest

from hack.devcluster.controlplane import build_binaries
from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster


def test_control_plane_binaries_report_their_real_version() -> None:
    binaries = build_binaries()  # cached: returns at once after the first build
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        out = subprocess.run(
            [str(binaries / component), "--version"], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "Kubernetes v1.36.3"
    etcd = subprocess.run([str(binaries / "etcd"), "--version"], capture_output=True, text=True, check=True)
    assert "etcd Version: 3.6." in etcd.stdout


def test_fake_nodes_offer_gpus_with_their_product_label(cluster: ClusterHandle) -> None:
    nodes = [
        n for n in cluster.list("nodes", "default") if n["metadata"]["labels"].get("llmserve.dev/fake-node")
    ]
    if not nodes:
        pytest.skip("not the local dev cluster")
    for node in nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert condition(node, "Ready")["status"] == "True"


def test_cut_off_node_goes_not_ready_and_its_replica_stops_counting(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    if cluster.dev is None:
        pytest.skip("cutting a node off needs the local dev cluster's network namespaces")
    cluster.apply(llmserve(autoscaling={"enabled": False}, replicas=2), namespace)
    wait_ready(cluster, namespace, "llama", 2)
    pods = cluster.list("pods", namespace, "llmserve.dev/llmserve=llama")
    node_name = pods[0]["spec"]["nodeName"]
    # The scheduler may put both replicas on one node; what must be counted follows from where they are.
    still_ready = sum(1 for p in pods if p["spec"]["nodeName"] != node_name)
    network = cluster.dev.networks[int(node_name.rsplit("-", 1)[1])]
    network.set_connected(False)
    try:
        wait_for(
            lambda: condition(cluster.get("node", node_name), "Ready").get("status") == "Unknown",
            timeout=60, message=f"{node_name} NotReady after losing its network",
        )  # fmt: skip
        obj = wait_for(
            lambda: (o := cluster.get("llmserve", "llama", namespace))
            and o["status"]["readyReplicas"] == still_ready
            and o,
            timeout=30, message=f"only the {still_ready} replica(s) off {node_name} counted as ready",
        )  # fmt: skip
        ready = condition(obj, "Ready")
        if still_ready:
            assert (ready["status"], ready["reason"]) == ("True", "PartiallyAvailable")
        else:
            assert ready["status"] == "False", ready
    finally:
        network.set_connected(True)
    wait_for(lambda: condition(cluster.get("node", node_name), "Ready").get("status") == "True", timeout=60,
             message=f"{node_name} Ready again")  # fmt: skip
