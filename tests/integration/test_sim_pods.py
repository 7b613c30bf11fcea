"""Engine pods on the fake GPU nodes are real simulator processes behind real pod IPs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import engine_key_headers, llmserve, wait_ready

pytestmark = pytest.mark.cluster


def _engine_pods(cluster: ClusterHandle, namespace: str, name: str = "llama") -> list[dict[str, Any]]:
    return cluster.list("pods", namespace, f"llmserve.dev/llmserve={name}")


def _processes_bound_to(ip: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"engine" in cmdline and ip.encode() in cmdline:
                pids.append(int(proc.name))
    return pids


@pytest.fixture(autouse=True)
def _needs_dev_cluster(cluster: ClusterHandle) -> None:
    if cluster.dev is None:
        pytest.skip("needs the local dev cluster's fake kubelet")


@pytest.mark.parametrize("engine_kind", ["simulator", "vllm"])
def test_every_pod_answers_completions_at_its_own_ip(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str, engine_kind: str
) -> None:
    cluster.apply(
        llmserve(engine={"kind": engine_kind}, autoscaling={"enabled": False}, replicas=2), namespace
    )
    wait_ready(cluster, namespace, "llama", 2)
    pods = _engine_pods(cluster, namespace)
    assert len({p["status"]["podIP"] for p in pods}) == 2
    for pod in pods:
        key = engine_key_headers(cluster, namespace)["Authorization"].removeprefix("Bearer ")
        client = OpenAI(base_url=f"http://{pod['status']['podIP']}:8000/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="llama-8b", messages=[{"role": "user", "content": "hello"}], max_tokens=5
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        assert [m.id for m in client.models.list()] == ["llama-8b"]


def test_deleting_a_pod_stops_its_engine_process(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve(autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    pod = _engine_pods(cluster, namespace)[0]
    ip = pod["status"]["podIP"]
    assert _processes_bound_to(ip), "the engine process should be running"
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=true", timeout=90)
    wait_for(lambda: not _processes_bound_to(ip), timeout=30, message=f"engine at {ip} stopped")


def test_pod_is_not_ready_before_its_health_endpoint(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    # 60 simulated seconds of model load at the test time-scale of 20: about 3 s of wall time.
    cluster.apply(llmserve(engine={"kind": "simulator", "args": ["--load-seconds=60"]}), namespace)

    def loading_pod() -> dict[str, Any] | None:
        pods = _engine_pods(cluster, namespace)
        return pods[0] if pods and pods[0].get("status", {}).get("podIP") else None

    pod = wait_for(loading_pod, timeout=30, message="pod with an IP")
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    loading_seen = 0
    for _ in range(600):
        # The pod first, then /health: a Ready the kubelet reported before our read of /health must
        # have followed a 200 from /health, and /health never fails again once the model is loaded.
        # (Read the other way round, the pod can turn Ready between the two reads: a false alarm.)
        ready = condition(cluster.get("pod", name, namespace), "Ready").get("status") == "True"
        healthy = _healthy(ip)
        if ready:
            assert healthy, "the pod was reported Ready while its /health endpoint still failed"
            break
        loading_seen += not healthy
    else:
        raise AssertionError("the pod never became Ready")
    assert loading_seen > 0, "the model load was too short to observe"
    wait_ready(cluster, namespace, "llama", 1, timeout=60)


def _healthy(ip: str) -> bool:
    try:
        return httpx.get(f"http://{ip}:8000/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
