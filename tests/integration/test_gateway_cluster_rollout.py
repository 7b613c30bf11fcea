"""Rolling the chart's gateway Deployment on the dev cluster under streaming load fails no request.

The gateway runs as the Helm chart renders it: the chart is installed for real, the controller-manager
drives the Deployment's ReplicaSets, and the fake kubelet runs each gateway pod as `llmserve gateway`
inside its fake node's network namespace, with the pod's ServiceAccount token, its readiness probe,
preStop hook, grace period and SIGTERM/SIGKILL. Clients reach the gateway through its Service via the
test's stand-in for kube-proxy (tests/support/service_proxy.py), with the official `openai` client and no
client retries, so any refused or cut connection counts as a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from hack.devcluster.processes import free_port
from tests.support.cluster import STATE_DIR, ClusterHandle, OperatorProcess, wait_for
from tests.support.helm import build_helm
from tests.support.manifests import llmserve, wait_ready

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmserve"

pytestmark = pytest.mark.cluster

RELEASE = "gwroll"
GATEWAY = f"{RELEASE}-llmserve-gateway"
API_KEY = "sk-gateway-rollout-0123456789abcdef"
CONCURRENT_STREAMS = 8
MAX_LOAD_SECONDS = 150  # the load stops by itself even if the rollout never finishes
SHUTDOWN_DELAY_SECONDS = 5  # chart default 10; streams here last ~1.5 s, well inside it


@dataclass
class LoadResult:
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def stream_forever(base_url: str, stop: threading.Event, result: LoadResult) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=60)
    while not stop.is_set():
        started = time.monotonic()
        try:
            stream = client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "tell me a story"}],
                max_tokens=20, stream=True,
            )  # fmt: skip
            finish = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
            assert finish == ["length"], finish
        except (openai.APIError, AssertionError) as err:
            with result.lock:
                result.failures.append(f"{type(err).__name__}: {err}")
            continue
        with result.lock:
            result.succeeded += 1
            result.started_at.append(started)


class ServiceProxyProcess:
    """tests/support/service_proxy.py as a process: the gateway Service, reachable on loopback."""

    def __init__(self, cluster: ClusterHandle, namespace: str, service: str) -> None:
        self.port = free_port()
        self.log_path = STATE_DIR.parent / f"{STATE_DIR.name}-service-proxy-{namespace}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.service_proxy", "--namespace", namespace,
                 "--service", service, "--port-name", "http", "--listen-port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=cluster.env, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def helm() -> str:
    return build_helm()


@pytest.fixture
def chart_gateway(
    helm: str,
    cluster: ClusterHandle,
    operator_process: OperatorProcess,
    namespace: str,
) -> Iterator[str]:
    """An LLMServe, and the chart installed in its namespace with two gateway replicas serving it."""
    if cluster.dev is None:
        pytest.skip("gateway pods run only on the local dev cluster's fake nodes")
    cluster.apply(llmserve("llama", model={"name": "meta-llama/Llama-3.1-8B-Instruct", "servedName": "llama"},
                           engine={"kind": "simulator", "args": ["--max-num-seqs=64", "--time-scale=0.1",
                                   "--output-length-distribution=max_tokens"]},
                           autoscaling={"enabled": False}), namespace)  # fmt: skip
    wait_ready(cluster, namespace, "llama", 1, timeout=90)
    # The chart's gateway derives engine keys from its release's master Secret; the test's operator
    # keeps its own (default/llmserve-engine-key-master), so the release gets a copy of it.
    master = cluster.get("secret", "llmserve-engine-key-master", "default")  # made for the LLMServe
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
         "--set", "gateway.replicas=2", "--set", f"gateway.watchNamespaces={{{namespace}}}",
         "--set", f"gateway.shutdown.delaySeconds={SHUTDOWN_DELAY_SECONDS}",
         "--set", "gateway.shutdown.drainSeconds=60", "--set-json", f"gateway.tolerations={json.dumps(tolerations)}"],
        capture_output=True, text=True, env=cluster.env,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    try:
        yield namespace
    finally:
        subprocess.run([helm, "uninstall", RELEASE, "-n", namespace, "--wait=false"], capture_output=True,
                       env=cluster.env)  # fmt: skip


def gateway_pods(cluster: ClusterHandle, namespace: str) -> list[dict[str, Any]]:
    return cluster.list("pods", namespace, "app.kubernetes.io/component=gateway")


def rolled_out(cluster: ClusterHandle, namespace: str, old_pods: set[str]) -> bool:
    """The Deployment reports every replica updated, ready and available, and no old pod is left, not
    even a terminating one (so the old ones finished draining)."""
    deployment = cluster.get("deployment", GATEWAY, namespace) or {}
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < deployment["metadata"]["generation"]:
        return False
    if not all(
        status.get(f) == 2 for f in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    ):
        return False
    return not old_pods & {p["metadata"]["name"] for p in gateway_pods(cluster, namespace)}


def container_log(pod_name: str) -> str:
    paths = list((STATE_DIR / "pods").glob(f"*_{pod_name}_*/container.log"))
    return "".join(path.read_text(errors="replace") for path in paths)


def test_rolling_the_charts_gateway_under_streaming_load_fails_no_request(
    cluster: ClusterHandle, chart_gateway: str
) -> None:
    namespace = chart_gateway
    proxy = ServiceProxyProcess(cluster, namespace, GATEWAY)
    base_url = f"http://127.0.0.1:{proxy.port}/v1"
    try:
        probe = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=10)

        def serving() -> bool:
            ready = [
                p
                for p in gateway_pods(cluster, namespace)
                if p["status"].get("containerStatuses", [{}])[0].get("ready")
            ]
            if len(ready) < 2:
                return False
            try:
                return bool(
                    probe.chat.completions.create(
                        model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=2
                    ).choices
                )
            except openai.APIError:
                return False

        wait_for(
            serving, timeout=90, interval=0.5, message="two ready gateway pods answering through the Service"
        )
        old_pods = {p["metadata"]["name"] for p in gateway_pods(cluster, namespace)}
        result, stop = LoadResult(), threading.Event()
        workers = [
            threading.Thread(target=stream_forever, args=(base_url, stop, result))
            for _ in range(CONCURRENT_STREAMS)
        ]
        for worker in workers:
            worker.start()
        load_deadline = time.monotonic() + MAX_LOAD_SECONDS
        try:
            wait_for(lambda: result.succeeded >= CONCURRENT_STREAMS, timeout=60, message="load flowing")
            rollout_started = time.monotonic()
            cluster.kubectl("rollout", "restart", f"deployment/{GATEWAY}", "-n", namespace)
            wait_for(lambda: rolled_out(cluster, namespace, old_pods), timeout=load_deadline - time.monotonic(),
                     interval=0.5, message="every gateway pod replaced")  # fmt: skip
            rollout_done = time.monotonic()
            # a few more streams on the new pods alone
            served_before = result.succeeded
            wait_for(lambda: result.succeeded >= served_before + CONCURRENT_STREAMS, timeout=60)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=90)
        new_pods = {p["metadata"]["name"] for p in gateway_pods(cluster, namespace)}
        assert len(new_pods) == 2 and not new_pods & old_pods, (old_pods, new_pods)
        assert result.failures == [], (
            f"{len(result.failures)} failed, {result.succeeded} ok: {result.failures[:5]}"
        )
        during = [t for t in result.started_at if rollout_started <= t <= rollout_done]
        assert len(during) >= CONCURRENT_STREAMS, (len(during), rollout_done - rollout_started)
        # the old gateways drained and exited on their own (SIGTERM), not at the grace period's SIGKILL
        for pod in old_pods:
            log = container_log(pod)
            assert "event=gateway_draining" in log and "event=gateway_stopped" in log, log[-2000:]
        print(f"rollout {rollout_done - rollout_started:.1f}s, {result.succeeded} streams ok, {len(during)} "
              "started during the rollout, 0 failed")  # fmt: skip
    finally:
        proxy.stop()
