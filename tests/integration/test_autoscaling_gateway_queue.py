"""The autoscaler counts requests the gateway queues (`--queue-when-full`): they wait in the gateway, not in
an engine, so the engines' queue shows nothing, yet the LLMServe scales up and says why.

The gateway runs as the Helm chart renders it (a pod on a fake node, found by the operator through its
labels and read on its `metrics` port); the load goes to the gateway pod's API port with an API key.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmserve.autoscale.collect import parse_engine_metrics
from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.helm import build_helm
from tests.support.load import MAX_TOKENS, PROMPT, LoadGenerator, ready_pod_ips
from tests.support.prom import scrape_total

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmserve"
EXAMPLE = yaml.safe_load((REPO / "examples" / "llama-8b-simulated.yaml").read_text())
RELEASE = "gwq"
API_KEY = "sk-gateway-queue-0123456789abcdef"
BATCH_SLOTS = 2
QUEUE_TARGET = 4
CONCURRENCY = 16  # 2 in the engine's batch, 14 waiting in the gateway


def llmserve() -> dict[str, Any]:
    manifest = copy.deepcopy(EXAMPLE)
    manifest["metadata"] = {"name": "llama"}
    # Long prompts (tests/support/load.py) make each request a long prefill, so requests wait.
    manifest["spec"]["engine"]["args"] = [f"--max-num-seqs={BATCH_SLOTS}", "--no-enable-prefix-caching"]
    manifest["spec"]["autoscaling"] = {
        "intervalSeconds": 1,
        "queueDepthTarget": QUEUE_TARGET,
        # A full batch is on target: only a queue can ask for replicas, and the engines show none.
        "batchSlotsTarget": 1,
        "scaleDownDelaySeconds": 120,
    }
    manifest["spec"].update({"minReplicas": 1, "maxReplicas": 3})
    return manifest


class GatewayLoad(LoadGenerator):
    """The same bounded closed-loop load, sent to one gateway instead of the engine pods."""

    def __init__(
        self, cluster: ClusterHandle, namespace: str, base_url: str, concurrency: int, max_seconds: float
    ) -> None:
        super().__init__(cluster, namespace, concurrency, max_seconds=max_seconds)
        self.base_url = base_url

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds

        async def user(client: httpx.AsyncClient) -> None:
            while not self._stop.is_set() and time.monotonic() < deadline and self.sent < self.max_requests:
                self.sent += 1
                body = {"model": self.model, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
                try:
                    response = await client.post(f"{self.base_url}/completions", json=body)
                    response.raise_for_status()
                except httpx.HTTPError:
                    self.errors += 1
                    await asyncio.sleep(0.2)

        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(timeout=90, trust_env=False, headers=headers) as client:
            await asyncio.gather(*(user(client) for _ in range(self.concurrency)))


def gateway_pod_ip(cluster: ClusterHandle, namespace: str) -> str | None:
    for pod in cluster.list("pods", namespace, "app.kubernetes.io/component=gateway"):
        status = pod.get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            return str(status["podIP"])
    return None


@pytest.fixture
def queueing_gateway(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> Iterator[str]:
    """The LLMServe at one ready replica and the chart's gateway (one replica, --queue-when-full) serving
    it; yields the gateway pod's IP."""
    if cluster.dev is None:
        pytest.skip("gateway pods run only on the local dev cluster's fake nodes")
    helm = build_helm()
    cluster.apply(llmserve(), namespace)
    wait_for(lambda: len(ready_pod_ips(cluster, namespace)) == 1, timeout=90, message="one ready replica")
    # The chart's gateway derives engine keys from its release's master Secret; the test's operator keeps
    # its own (default/llmserve-engine-key-master), so the release gets a copy of it.
    master = cluster.get("secret", "llmserve-engine-key-master", "default")
    assert master is not None
    cluster.apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": f"{RELEASE}-llmserve-engine-key-master"}, "data": master["data"]},
                  namespace)  # fmt: skip
    cluster.apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "team-a", "labels": {"llmserve.dev/api-key": "true"}},
                   "stringData": {"key": API_KEY, "name": "team-a"}}, namespace)  # fmt: skip
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    install = subprocess.run(
        [helm, "install", RELEASE, str(CHART), "-n", namespace, "--skip-crds", "--set", "operator.replicas=0",
         "--set", "gateway.replicas=1", "--set", "gateway.queueWhenFull=true",
         "--set", f"gateway.watchNamespaces={{{namespace}}}", "--set", "gateway.shutdown.delaySeconds=0",
         "--set", "gateway.shutdown.drainSeconds=5", "--set-json", f"gateway.tolerations={json.dumps(tolerations)}"],
        capture_output=True, text=True, env=cluster.env,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    try:
        ip = wait_for(lambda: gateway_pod_ip(cluster, namespace), timeout=90, message="a ready gateway pod")
        assert ip is not None
        yield ip
    finally:
        subprocess.run([helm, "uninstall", RELEASE, "-n", namespace, "--wait=false"], capture_output=True,
                       env=cluster.env)  # fmt: skip


def engine_waiting(ip: str) -> float:
    response = httpx.get(f"http://{ip}:8000/metrics", timeout=2, trust_env=False)
    return parse_engine_metrics(response.text).requests_waiting


def test_requests_queued_in_the_gateway_scale_the_llmserve_up_though_no_engine_queues_them(
    cluster: ClusterHandle, operator_process: OperatorProcess, queueing_gateway: str, namespace: str
) -> None:
    gateway_metrics = f"http://{queueing_gateway}:9091/metrics"
    engine_ip = ready_pod_ips(cluster, namespace)[0]
    with GatewayLoad(
        cluster, namespace, f"http://{queueing_gateway}:8080/v1", CONCURRENCY, max_seconds=200
    ) as load:
        # The backlog is in the gateway (labelled with its LLMServe), and the engine queues nothing.
        def queued_in_gateway_only() -> bool:
            queued = scrape_total(
                gateway_metrics, "llmserve_gateway_queued_requests", namespace=namespace, llmserve="llama"
            )
            return queued > 2 * QUEUE_TARGET and engine_waiting(engine_ip) == 0

        wait_for(queued_in_gateway_only, timeout=60, interval=0.2, message="requests queued in the gateway")

        def scaled_up() -> dict[str, Any] | None:
            obj = cluster.get("llmserve", "llama", namespace) or {}
            scaling = (obj.get("status") or {}).get("autoscaling") or {}
            return (
                obj if (scaling.get("desiredReplicas") or 1) > 1 and scaling.get("lastScaleReason") else None
            )

        obj = wait_for(scaled_up, timeout=90, interval=0.2, message="the autoscaler adds replicas")
        assert not load.finished.is_set()  # the decision was made under load, not after it
    assert obj is not None
    reason = obj["status"]["autoscaling"]["lastScaleReason"]
    assert "held in the gateway" in reason and "above target 4" in reason, reason
    assert obj["spec"]["replicas"] > 1
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=SuccessfulRescale", "-o",
        "jsonpath={.items[*].message}",
    ).stdout  # fmt: skip
    assert "held in the gateway" in events, events
    assert condition(obj, "ScalingActive")["reason"] == "ValidMetricFound"
    gauge = f'llmserve_autoscaler_gateway_waiting_requests{{llmserve="llama",namespace="{namespace}"}}'
    assert gauge in operator_process.metrics_text()
    assert API_KEY not in events and API_KEY not in json.dumps(obj)
    assert API_KEY not in operator_process.log_path.read_text(errors="replace")


def unreadable_gateway_pod() -> dict[str, Any]:
    """A pod the operator takes for a gateway (the chart's labels) that is Ready but whose `metrics` port
    answers nothing: the simulator serves its readiness on 8000, and nothing listens on 9099."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "gateway-without-metrics",
            "labels": {"app.kubernetes.io/name": "llmserve", "app.kubernetes.io/component": "gateway"},
        },
        "spec": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "gateway",
                    "image": "llmserve:test",
                    "command": ["llmserve", "sim", "engine"],
                    "ports": [
                        {"name": "http", "containerPort": 8000},
                        {"name": "metrics", "containerPort": 9099},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 1},
                }
            ],
        },
    }


def recommended_replicas(operator_process: OperatorProcess, namespace: str) -> float | None:
    line = f'llmserve_autoscaler_recommended_replicas{{llmserve="llama",namespace="{namespace}"}} '
    for text in operator_process.metrics_text().splitlines():
        if text.startswith(line):
            return float(text.split()[-1])
    return None


def test_an_unreadable_gateway_holds_scale_down_says_so_in_scaling_active_and_recovery_releases_it(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    if cluster.dev is None:
        pytest.skip("the pod runs only on the local dev cluster's fake nodes")
    manifest = llmserve()
    manifest["spec"]["autoscaling"]["scaleDownDelaySeconds"] = 2
    cluster.apply(manifest, namespace)
    wait_for(lambda: len(ready_pod_ips(cluster, namespace)) == 1, timeout=90, message="one ready replica")
    cluster.apply(unreadable_gateway_pod(), namespace)
    try:
        wait_for(
            lambda: gateway_pod_ip(cluster, namespace), timeout=60, message="the unreadable gateway Ready"
        )

        def unavailable() -> dict[str, Any]:
            return condition(cluster.get("llmserve", "llama", namespace), "ScalingActive")

        active = wait_for(
            lambda: (c := unavailable()).get("reason") == "GatewayMetricsUnavailable" and c,
            timeout=30, message="ScalingActive GatewayMetricsUnavailable",
        )  # fmt: skip
        assert active["status"] == "True"  # the engines still decide
        assert f"gateway {namespace}/gateway-without-metrics" in active["message"], active
        assert "ConnectError" in active["message"] and "9099" not in active["message"], active
        # Idle at 2 replicas: the engines alone recommend 1, but the gateway's share is unknown.
        cluster.kubectl("scale", "llmserve/llama", "--replicas=2", "-n", namespace)
        wait_for(
            lambda: len(ready_pod_ips(cluster, namespace)) == 2, timeout=90, message="two ready replicas"
        )
        wait_for(lambda: recommended_replicas(operator_process, namespace) == 2, timeout=30,
                 message="the recommendation held at 2")  # fmt: skip
        assert unavailable().get("reason") == "GatewayMetricsUnavailable"
        assert (cluster.get("llmserve", "llama", namespace) or {})["spec"]["replicas"] == 2
    finally:
        cluster.kubectl("delete", "pod", "gateway-without-metrics", "-n", namespace, "--wait=false")
    # Read again: the idle replica goes after the 2 s window.
    wait_for(lambda: (cluster.get("llmserve", "llama", namespace) or {})["spec"]["replicas"] == 1, timeout=60,
             message="scaled down to 1 once the gateway is read again")  # fmt: skip
    assert wait_for(
        lambda: unavailable().get("reason") == "ValidMetricFound", timeout=30, message="ValidMetricFound"
    )
    log = operator_process.log_path.read_text(errors="replace")
    assert "event=gateway_read_failed selector=" in log and "event=gateway_read_recovered" in log
