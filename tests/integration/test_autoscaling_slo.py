"""SLO-aware autoscaling on the local control plane: a long-prompt phase through the gateway, scaled on latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.test_gateway_cluster import KubeGateway, api_key_secret
from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster

# ~6,000-token prompts (four characters per token) and short answers: on the simulated H100 each prompt is
# one ~0.2 s prefill step. A TTFT target below that is broken by every request, while one user leaves no
# queue and a nearly empty KV cache, and arrives slower than a replica prefills: queue, KV cache and the
# demand model all say one replica is enough; only latency can tell it is late. The engines run in real
# time (the test cluster's engines default to 20x): rates are per wall-clock second, latencies per
# simulated second, and the replica model compares the two.
PROMPT = "word" * 6000
USERS = 1
SLO = {"timeToFirstTokenSeconds": 0.15, "interTokenLatencySeconds": 0.5, "percentile": 90}
QUEUE_TARGET = 4


@pytest.fixture
def gateway(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> Iterator[KubeGateway]:
    if cluster.dev is None:
        pytest.skip("pod IPs are only reachable from the test process on the local control plane")
    cluster.apply(api_key_secret(), namespace)
    process = KubeGateway(cluster, namespace)
    yield process
    process.stop()


class LongPromptPhase:
    """USERS closed-loop clients through the gateway (official openai client), bounded in time and requests."""

    def __init__(self, client: openai.OpenAI, max_seconds: float = 120, max_requests: int = 2000) -> None:
        self.client, self.max_seconds, self.max_requests = client, max_seconds, max_requests
        self.sent = self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._user, daemon=True) for _ in range(USERS)]

    def __enter__(self) -> LongPromptPhase:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _user(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            try:
                self.client.completions.create(model="llama-8b", prompt=PROMPT, max_tokens=16)
            except openai.OpenAIError:
                with self._lock:
                    self.errors += 1
                time.sleep(0.2)


def scaled_on_latency(cluster: ClusterHandle, namespace: str) -> dict[str, Any] | None:
    obj = cluster.get("llmserve", "llama", namespace) or {}
    scaling = (obj.get("status") or {}).get("autoscaling") or {}
    if (obj.get("spec", {}).get("replicas") or 1) > 1 and "TTFT p90" in (
        scaling.get("lastScaleReason") or ""
    ):
        return obj
    return None


def test_a_long_prompt_phase_through_the_gateway_scales_on_latency_while_queue_and_kv_look_fine(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    manifest = llmserve(
        "llama",
        # Every request repeats one prompt: with prefix caching on, the simulator (like vLLM) would
        # serve it from cache after the first, and prefill would no longer break the TTFT target.
        engine={
            "kind": "simulator",
            "args": ["--max-num-seqs=32", "--time-scale=1", "--no-enable-prefix-caching"],
        },
        replicas=1,
        minReplicas=1,
        maxReplicas=3,
        autoscaling={
            "intervalSeconds": 2,
            "queueDepthTarget": QUEUE_TARGET,
            "kvCacheTarget": 0.8,
            "scaleDownDelaySeconds": 600,
            "slo": SLO,
        },
    )
    cluster.apply(manifest, namespace)
    wait_ready(cluster, namespace, "llama", 1)
    wait_for(lambda: "llama-8b" in gateway.models(), timeout=30, message="model listed by the gateway")

    with LongPromptPhase(gateway.client(timeout=60)) as phase:
        obj = wait_for(
            lambda: scaled_on_latency(cluster, namespace),
            timeout=90,
            interval=0.5,
            message="a scale-up whose reason is TTFT above the SLO",
        )
    assert phase.sent > 0 and phase.errors == 0

    scaling = obj["status"]["autoscaling"]
    reason = scaling["lastScaleReason"]
    assert reason.endswith("(target 0.15s) above SLO"), reason
    assert scaling["latency"].startswith("TTFT p90")
    assert scaling["arrivalsPerSecond"] > 0
    # What the old signals saw at that decision: no queue to speak of and a nearly empty KV cache.
    assert scaling["queueDepthPerReplica"] < QUEUE_TARGET
    assert scaling["kvCacheUtilization"] < 0.8
    assert condition(obj, "ScalingActive")["reason"] == "ValidMetricFound"
    assert "against the SLO" in condition(obj, "ScalingActive")["message"]

    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=SuccessfulRescale", "-o",
        "jsonpath={.items[*].message}",
    ).stdout  # fmt: skip
    assert "reason: TTFT p90" in events and "above SLO" in events, events
