"""The gateway on the local control plane: discovery through watches, new pods, and hold at zero."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hack.devcluster.processes import free_port
from tests.support.cluster import STATE_DIR, ClusterHandle, OperatorProcess, serving, wait_for
from tests.support.load import ready_pod_ips
from tests.support.manifests import llmserve as example_llmserve
from tests.support.manifests import wait_ready
from tests.support.prom import scrape_total
from tests.support.shutdown import stop_process

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-cluster-test-0123456789abcdef"
HOLD_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 15.0


def llmserve(name: str, **spec: Any) -> dict[str, Any]:
    """The example with the autoscaler off: these tests scale by hand and through the gateway."""
    return example_llmserve(name, **{"autoscaling": {"enabled": False}, **spec})


def api_key_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "test-key", "labels": {"llmserve.dev/api-key": "true"}},
        "data": {
            "key": base64.b64encode(API_KEY.encode()).decode(),
            "name": base64.b64encode(b"cluster-test").decode(),
        },
    }


class KubeGateway:
    """`llmserve gateway` discovering from the cluster, limited to one namespace."""

    def __init__(self, cluster: ClusterHandle, namespace: str, extra_args: tuple[str, ...] = ()) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = STATE_DIR.parent / f"{STATE_DIR.name}-gateway-{namespace}.log"
        # where this process's lines start (a rerun with the same state dir appends to the file)
        self.first_line = len(self.log_path.read_text().splitlines()) if self.log_path.exists() else 0
        args = [
            sys.executable, "-m", "llmserve.cli", "gateway", "--namespace", namespace,
            "--keys-namespace", namespace, "--port", str(self.port), "--metrics-port", str(self.metrics_port), "--scrape-interval", "0.5",
            "--hold-timeout", str(HOLD_TIMEOUT_SECONDS), *extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=cluster.env, start_new_session=True
            )
        wait_for(self._ready, timeout=60, interval=0.2, message="gateway /ready")

    def _ready(self) -> bool:
        return serving(self.process, f"http://127.0.0.1:{self.port}/ready", self.log_path)

    def client(self, timeout: float = 30) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=API_KEY, max_retries=0, timeout=timeout)

    def models(self) -> list[str]:
        return [model.id for model in self.client().models.list()]

    def metric(self, name: str, **labels: str) -> float:
        return scrape_total(f"http://127.0.0.1:{self.metrics_port}/metrics", name, **labels)

    def stop(self) -> None:
        stop_process(self.process, STOP_TIMEOUT_SECONDS)


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


def requests_served(pod_ip: str) -> float:
    return scrape_total(f"http://{pod_ip}:8000/metrics", "vllm:request_success_total")


def test_the_gateway_serves_ready_pods_and_a_new_pod_gets_traffic_without_a_restart(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    cluster.apply(llmserve("llama", replicas=1), namespace)
    wait_ready(cluster, namespace, "llama", 1, timeout=90)
    client = gateway.client()
    wait_for(lambda: "llama-8b" in gateway.models(), timeout=30, message="model listed by the gateway")
    reply = client.chat.completions.create(
        model="llama-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 4

    cluster.kubectl("scale", "llms/llama", "-n", namespace, "--replicas=2")
    wait_ready(cluster, namespace, "llama", 2, timeout=90)
    ips = ready_pod_ips(cluster, namespace, "llmserve.dev/llmserve=llama")
    assert len(ips) == 2

    def both_pods_served() -> bool:
        for _ in range(4):
            client.completions.create(model="llama-8b", prompt="x", max_tokens=2)
        return all(requests_served(ip) > 0 for ip in ips)

    wait_for(both_pods_served, timeout=30, interval=0.2, message="the new pod receiving requests")
    assert gateway.process.poll() is None


def test_a_key_secret_that_cannot_be_used_is_reported_with_an_event_and_a_new_key_works_at_once(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    bad = api_key_secret()
    bad["metadata"]["name"] = "short-key"
    bad["data"] = {"key": base64.b64encode(b"too-short").decode()}
    cluster.apply(bad, namespace)

    def reported() -> str:
        return cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "reason=InvalidApiKey,involvedObject.kind=Secret",
        ).stdout

    assert "at least 16 characters" in wait_for(reported, timeout=20, message="InvalidApiKey event")
    new_key = "sk-second-key-0123456789abcdef"
    second = api_key_secret()
    second["metadata"]["name"] = "second-key"
    second["data"] = {"key": base64.b64encode(new_key.encode()).decode()}
    cluster.apply(second, namespace)

    def accepted() -> bool:
        reply = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {new_key}"})
        return reply.status_code == 200

    wait_for(accepted, timeout=10, interval=0.1, message="the new key accepted without a restart")
    cluster.kubectl("delete", "secret", "second-key", "-n", namespace)
    wait_for(lambda: not accepted(), timeout=10, interval=0.1, message="the deleted key refused")


def test_a_request_for_a_model_at_zero_is_held_until_the_gateway_scales_it_up(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    cluster.apply(
        llmserve("sleepy", minReplicas=0, replicas=0, model={"name": "m", "servedName": "sleepy"}), namespace
    )
    wait_for(lambda: "sleepy" in gateway.models(), timeout=30, message="model listed while at zero")
    assert not ready_pod_ips(cluster, namespace, "llmserve.dev/llmserve=sleepy")

    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["reply"] = gateway.client(timeout=HOLD_TIMEOUT_SECONDS + 30).chat.completions.create(
                model="sleepy", messages=[{"role": "user", "content": "wake up"}], max_tokens=3
            )
        except Exception as err:  # reported by the assertion below
            result["error"] = err

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: gateway.metric("llmserve_gateway_held_requests", model="sleepy") == 1, timeout=10,
             interval=0.1, message="request held")  # fmt: skip
    wait_for(
        lambda: (cluster.get("llmserve", "sleepy", namespace) or {}).get("spec", {}).get("replicas") == 1,
        timeout=15,
        message="LLMServe scaled to 1 by the gateway",
    )
    caller.join(timeout=HOLD_TIMEOUT_SECONDS + 30)
    assert "error" not in result, result.get("error")
    assert result["reply"].usage.completion_tokens == 3
    assert gateway.metric("llmserve_gateway_held_requests", model="sleepy") == 0
    assert gateway.metric("llmserve_gateway_scale_from_zero_total", llmserve="sleepy") == 1
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=ScaleFromZero"
    ).stdout
    assert "sleepy" in events
