"""Engines on the dev cluster answer only the gateway: an engine key Secret, a NetworkPolicy, the key sent."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.integration import test_gateway_cluster as gateway_cluster
from tests.integration.test_gateway_cluster import KubeGateway, llmserve
from tests.support.cluster import ClusterHandle, wait_for
from tests.support.load import ready_pod_ips
from tests.support.manifests import wait_ready

pytestmark = pytest.mark.cluster
gateway = gateway_cluster.gateway  # the fixture: a gateway discovering this test's namespace


def test_an_engine_refuses_requests_without_its_key_and_the_gateway_path_works(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    cluster.apply(llmserve("guarded", replicas=1), namespace)
    wait_ready(cluster, namespace, "guarded", 1, timeout=90)
    llm = cluster.get("llmserve", "guarded", namespace)
    assert llm is not None

    secret = cluster.get("secret", "guarded-engine-key", namespace)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == llm["metadata"]["uid"]
    engine_key = base64.b64decode(secret["data"]["api-key"]).decode()
    policy = cluster.get("networkpolicy", "guarded-engine", namespace)
    assert policy is not None and policy["spec"]["policyTypes"] == ["Ingress"]
    pod = cluster.list("pods", namespace, "llmserve.dev/llmserve=guarded")[0]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    (ip,) = ready_pod_ips(cluster, namespace, "llmserve.dev/llmserve=guarded")
    body = {"model": "llama-8b", "prompt": "hi", "max_tokens": 2}
    # From elsewhere in the cluster (here: the test process), no key or a wrong key is refused ...
    assert httpx.post(f"http://{ip}:8000/v1/completions", json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer sk-engine-guessed"}
    assert (
        httpx.post(f"http://{ip}:8000/v1/completions", json=body, headers=wrong, timeout=10).status_code
        == 401
    )
    assert httpx.get(f"http://{ip}:8000/v1/models", timeout=10).status_code == 401
    # ... probes and metrics stay open (kubelet and Prometheus carry no key), as in vLLM ...
    assert httpx.get(f"http://{ip}:8000/health", timeout=10).status_code == 200
    # ... the engine's own key works ...
    right = {"Authorization": f"Bearer {engine_key}"}
    assert (
        httpx.post(f"http://{ip}:8000/v1/completions", json=body, headers=right, timeout=10).status_code
        == 200
    )
    # ... and the gateway, which derives the key from the master Secret, gets answers.
    wait_for(lambda: "llama-8b" in gateway.models(), timeout=30, message="model listed by the gateway")
    reply = gateway.client().completions.create(model="llama-8b", prompt="hi", max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert engine_key not in gateway.log_path.read_text()


def test_a_forged_endpoint_slice_does_not_become_a_backend(
    cluster: ClusterHandle, namespace: str, gateway: KubeGateway
) -> None:
    cluster.apply(llmserve("real", replicas=1), namespace)
    wait_ready(cluster, namespace, "real", 1, timeout=90)
    wait_for(lambda: "llama-8b" in gateway.models(), timeout=30, message="model listed by the gateway")
    forged = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "real-forged",
            "labels": {"kubernetes.io/service-name": "real", "llmserve.dev/llmserve": "real"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}],
    }
    cluster.apply(forged, namespace)
    client = gateway.client()
    for _ in range(6):  # every request lands on the real pod, none on the forged address
        client.completions.create(model="llama-8b", prompt="x", max_tokens=1)
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5).text
    assert "192.0.2.10" not in text


def test_a_gateway_given_key_secret_names_reads_only_those(cluster: ClusterHandle, namespace: str) -> None:
    if cluster.dev is None:
        pytest.skip(
            "the gateway runs on the test host, which reaches pod IPs only on the local control plane"
        )
    cluster.apply(gateway_cluster.api_key_secret(), namespace)  # "test-key", the named one
    other_key = "sk-not-named-0123456789abcdef"
    other = gateway_cluster.api_key_secret()
    other["metadata"]["name"] = "other-key"
    other["data"] = {"key": base64.b64encode(other_key.encode()).decode()}
    cluster.apply(other, namespace)
    named = KubeGateway(cluster, namespace, ("--key-secret", "test-key"))
    try:
        models = f"{named.base_url}/models"
        assert (
            httpx.get(models, headers={"Authorization": f"Bearer {gateway_cluster.API_KEY}"}).status_code
            == 200
        )
        # labelled, but not named: never read
        assert httpx.get(models, headers={"Authorization": f"Bearer {other_key}"}).status_code == 401
    finally:
        named.stop()
