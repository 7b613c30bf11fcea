"""Scale-down on the dev cluster: a generation within the drain time completes, a longer one is a failure.

The engine's drain time is `spec.engine.drainSeconds` (default 600 s, so generations of minutes survive
a scale-down; tests/unit/test_render_security.py checks the rendered grace period). Here the simulator
generates slowly (--time-scale=0.1: ~75 ms a token) so a generation of ~9 s is long next to a short
configured drain, and the fake kubelet plays the pod's preStop sleep, SIGTERM and grace period.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tests.integration import test_gateway_cluster as gateway_cluster
from tests.integration.test_gateway_cluster import KubeGateway, llmserve, ready_pod_ips, wait_ready
from tests.support.cluster import ClusterHandle, wait_for
from tests.support.manifests import engine_key_headers

pytestmark = pytest.mark.cluster
gateway = gateway_cluster.gateway  # the fixture: a gateway discovering this test's namespace

SLOW_ENGINE = ["--time-scale=0.1", "--output-length-distribution=max_tokens", "--max-num-seqs=8"]


def slow_llmserve(name: str, drain_seconds: int) -> dict[str, Any]:
    return llmserve(name, replicas=1, minReplicas=0, model={"name": "meta-llama/Llama-3.1-8B-Instruct", "servedName": name},
                    engine={"kind": "simulator", "args": SLOW_ENGINE, "drainSeconds": drain_seconds})  # fmt: skip


class Stream:
    """One streaming generation through the gateway, read in a thread: chunks counted as they come."""

    def __init__(self, gateway: KubeGateway, model: str, max_tokens: int) -> None:
        self.chunks, self.finish, self.error = 0, "", ""
        self.thread = threading.Thread(target=self._read, args=(gateway, model, max_tokens))
        self.thread.start()

    def _read(self, gateway: KubeGateway, model: str, max_tokens: int) -> None:
        try:
            stream = gateway.client(timeout=120).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "a long story"}], max_tokens=max_tokens,
                stream=True,
            )  # fmt: skip
            for chunk in stream:
                if chunk.choices:
                    self.chunks += 1
                    self.finish = chunk.choices[0].finish_reason or self.finish
        except openai.APIError as err:
            self.error = f"{type(err).__name__}: {err}"

    def join(self) -> None:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "stream still running"


def endpoint_conditions(cluster: ClusterHandle, namespace: str, ip: str) -> dict[str, Any]:
    for slice_ in cluster.list("endpointslices", namespace, "kubernetes.io/service-name"):
        for endpoint in slice_.get("endpoints") or []:
            if ip in endpoint.get("addresses", []):
                return dict(endpoint.get("conditions") or {})
    return {}


def access_lines(gateway: KubeGateway, model: str) -> list[str]:
    # The log file is appended to across runs that reuse the state dir: read this gateway's part only.
    return [
        line for line in gateway.log_path.read_text().splitlines()[gateway.first_line :]
        if "event=request " in line and f"model={model} " in line and "path=/v1/chat/completions" in line
    ]  # fmt: skip


def test_a_generation_within_the_drain_time_completes_when_its_pod_is_scaled_away(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    cluster.apply(slow_llmserve("long", drain_seconds=40), namespace)
    wait_ready(cluster, namespace, "long", 1)
    (ip,) = ready_pod_ips(cluster, namespace, "llmserve.dev/llmserve=long")
    wait_for(lambda: "long" in gateway.models(), timeout=30, message="model listed by the gateway")
    started = time.monotonic()
    stream = Stream(gateway, "long", max_tokens=120)  # ~9 s: past the 5 s preStop, into the drain
    wait_for(lambda: stream.chunks >= 5 or stream.error, timeout=30, interval=0.1, message="stream flowing")
    cluster.kubectl("scale", "llms/long", "-n", namespace, "--replicas=0")
    # The endpoint leaves rotation before SIGTERM: Kubernetes marks it terminating (not ready) while the
    # engine, still in its preStop sleep, has not been told to drain (/health 200; 503 once draining).
    headers = engine_key_headers(cluster, namespace, "long")

    def out_of_rotation_and_not_yet_draining() -> bool:
        conditions = endpoint_conditions(cluster, namespace, ip)
        health = httpx.get(f"http://{ip}:8000/health", headers=headers, timeout=5).status_code
        return conditions.get("terminating") is True and conditions.get("ready") is False and health == 200

    wait_for(
        out_of_rotation_and_not_yet_draining, timeout=10, interval=0.2, message="endpoint out before SIGTERM"
    )
    stream.join()
    assert stream.error == "" and stream.finish == "length", (stream.error, stream.finish, stream.chunks)
    assert time.monotonic() - started > 5 + 2  # it outlived the preStop sleep: it ran into the drain
    wait_for(lambda: not cluster.list("pods", namespace, "llmserve.dev/llmserve=long"), timeout=60,
             message="the pod gone once its generation finished")  # fmt: skip
    # The access-log line is written as the gateway finishes the request, which can be after the client saw the end.
    (line,) = wait_for(
        lambda: access_lines(gateway, "long"), timeout=15, message="the request's access-log line"
    )
    assert " status=200 " in line and line.endswith(" error=-"), line
    assert gateway.metric("llmserve_gateway_errors_total", model="long") == 0


def test_a_generation_longer_than_the_drain_time_is_cut_and_counted_as_a_failure(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    cluster.apply(slow_llmserve("short", drain_seconds=2), namespace)
    wait_ready(cluster, namespace, "short", 1)
    wait_for(lambda: "short" in gateway.models(), timeout=30, message="model listed by the gateway")
    stream = Stream(gateway, "short", max_tokens=400)  # ~30 s of tokens; 5 s preStop + 2 s drain
    wait_for(lambda: stream.chunks >= 5 or stream.error, timeout=30, interval=0.1, message="stream flowing")
    cluster.kubectl("scale", "llms/short", "-n", namespace, "--replicas=0")
    stream.join()
    assert stream.error and stream.finish == "", (stream.chunks, stream.finish)  # the client was told
    assert 5 < stream.chunks < 400
    # The access-log line is written as the gateway finishes the request, which can be after the client saw the end.
    (line,) = wait_for(
        lambda: access_lines(gateway, "short"), timeout=15, message="the request's access-log line"
    )
    assert " status=502 " in line and line.endswith(" error=upstream_broken_stream"), line
    assert gateway.metric("llmserve_gateway_requests_total", model="short", status="502") == 1
    assert (
        gateway.metric("llmserve_gateway_errors_total", model="short", reason="upstream_broken_stream") == 1
    )
    assert any(
        "event=upstream_broken_stream" in line
        for line in gateway.log_path.read_text().splitlines()[gateway.first_line :]
    )
