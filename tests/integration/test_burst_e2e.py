"""Burst end to end: a full dev cluster rents its shortfall from the fake RunPod or Vast.ai, the official
`openai` client gets answers through the gateway from the rented engine (TLS, per-instance key), and a
scale-down gives back the rented replica first.

Everything is real but the cloud: the control plane and fake GPU nodes (2 nodes x 4 GPUs), the operator
and gateway processes, `llmserve sim provider` on loopback speaking RunPod's or Vast.ai's API, and the
engines it starts for each rented instance.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hack.devcluster.processes import free_port
from llmserve.burst.security import mint_api_key, pinned_ssl_context
from tests.support.burst_cleanup import remove_burst_objects
from tests.support.burst_rig import burst_pool, burst_status, pool_status, provider_env
from tests.support.cluster import (
    STATE_DIR,
    TEST_BURST_ENV,
    ClusterHandle,
    OperatorProcess,
    serving,
    wait_for,
)
from tests.support.fake_provider import FakeProviderProcess
from tests.support.manifests import llmserve
from tests.support.prom import sample_total, scrape, scrape_total

pytestmark = pytest.mark.cluster

GATEWAY_KEY = "sk-burst-e2e-0123456789abcdef"
MONTHLY_BUDGET_USD = 5.0
CLUSTER_ID = "e2ecluster"


class Rig:
    """One fake provider account, the operator pointed at it, and the pool's credentials Secret."""

    def __init__(self, api: str, system: str, fake: FakeProviderProcess, operator: OperatorProcess) -> None:
        self.api, self.system, self.fake, self.operator = api, system, fake, operator

    def provider_log(self) -> str:
        logs = [self.fake.log_path, *self.fake.state_dir.glob("instances/*/engine.log")]
        return "\n".join(p.read_text(errors="replace") for p in logs if p.exists())


@pytest.fixture(params=["runpod", "vastai"])
def rig(
    request: pytest.FixtureRequest, cluster: ClusterHandle, operator_process: OperatorProcess
) -> Iterator[Rig]:
    if cluster.dev is None:
        pytest.skip("pod IPs and the loopback fake are only reachable on the local control plane")
    api: str = request.param
    system = cluster.create_namespace(f"burst-e2e-{api}")
    account_key = "acct-" + mint_api_key()
    cluster.kubectl(
        "create", "secret", "generic", "provider-key", "-n", system, f"--from-literal=apiKey={account_key}"
    )
    state = Path(f"{STATE_DIR}-burst-e2e-{api}")
    shutil.rmtree(state, ignore_errors=True)  # a fresh account: no ledger or instances of an earlier test
    fake = FakeProviderProcess(api, state, account_key, provision_seconds=1.0, clock="wall").start()
    env = {
        **provider_env(fake),
        **TEST_BURST_ENV,
        "LLMSERVE_OPERATOR_NAMESPACE": system,
        "LLMSERVE_CLUSTER_ID": CLUSTER_ID,
    }
    os.environ.update(env)
    operator_process.restart()
    try:
        yield Rig(api, system, fake, operator_process)
    finally:
        if operator_process.process is None or operator_process.process.poll() is not None:
            operator_process.start()  # a test that killed it failed before starting it again
        try:
            # Their finalizers terminate what is left; stripped (and the teardown fails) if that stalls, so
            # a stuck pool never reaches the next test's operator.
            remove_burst_objects(cluster, [], timeout_seconds=90)
        finally:
            for key in env:
                os.environ.pop(key, None)
            operator_process.restart()
            fake.stop()
        assert fake.engine_pids() == [], "a rented engine outlived the test"
        cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)


def pool(name: str, api: str, **spec: Any) -> dict[str, Any]:
    return burst_pool(name, api, monthlyBudget=MONTHLY_BUDGET_USD, **spec)


def model(pool_name: str, replicas: int) -> dict[str, Any]:
    # 4 GPUs a replica on 2 nodes x 4 GPUs: two local replicas fit, a third stays Unschedulable.
    return llmserve(
        "llama",
        replicas=replicas,
        maxReplicas=4,
        autoscaling={"enabled": False},
        resources={"gpus": 4, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
        burst={"pool": pool_name, "maxReplicas": 1, "unschedulableSeconds": 1, "scaleInDelaySeconds": 0},
    )


class Gateway:
    def __init__(
        self, cluster: ClusterHandle, namespace: str, burst_namespace: str, env: dict[str, str]
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()  # /metrics has its own port since the gateway hardening
        self.log_path = STATE_DIR.parent / f"{STATE_DIR.name}-gateway-{namespace}.log"
        args = [sys.executable, "-m", "llmserve.cli", "gateway", "--namespace", namespace, "--keys-namespace",
                namespace, "--burst-namespace", burst_namespace, "--port", str(self.port),
                "--metrics-port", str(self.metrics_port), "--scrape-interval", "0.5"]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            env={**cluster.env, **env}, start_new_session=True)  # fmt: skip
        wait_for(lambda: serving(self.process, f"http://127.0.0.1:{self.port}/ready", self.log_path),
                 timeout=60, message="gateway /ready")  # fmt: skip

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=GATEWAY_KEY, max_retries=0,
                             timeout=60)  # fmt: skip

    def backends(self, served: str) -> float:
        return scrape_total(
            f"http://127.0.0.1:{self.metrics_port}/metrics", "llmserve_gateway_backends", model=served
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def gateway_key_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gw-key", "labels": {"llmserve.dev/api-key": "true"}},
        "data": {
            "key": base64.b64encode(GATEWAY_KEY.encode()).decode(),
            "name": base64.b64encode(b"e2e").decode(),
        },
    }


def instance_secret(cluster: ClusterHandle, system: str, instance: str) -> dict[str, str]:
    secret = cluster.get("secret", f"burst-{instance}", system)
    assert secret is not None, f"instance Secret burst-{instance} exists"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def engine_tls(rig: Rig, secret: dict[str, str]) -> ssl.SSLContext:
    if rig.api == "vastai":  # the engine's own certificate, pinned
        return pinned_ssl_context(secret["tlsCert"])
    return ssl.create_default_context(cafile=str(rig.fake.proxy_cert))


def requests_served(endpoint: str, key: str, tls: ssl.SSLContext) -> float:
    page = scrape(endpoint + "/metrics", headers={"Authorization": f"Bearer {key}"}, verify=tls)
    return sample_total(page, "vllm:request_success_total")


def local_ready_pods(cluster: ClusterHandle, namespace: str) -> list[str]:
    pods = cluster.list("pods", namespace, "llmserve.dev/llmserve=llama")
    return sorted(p["metadata"]["name"] for p in pods
                  if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))  # fmt: skip


def test_shortfall_is_rented_served_through_the_gateway_over_tls_and_given_back_first(
    cluster: ClusterHandle, rig: Rig, namespace: str
) -> None:
    pool_name = f"e2e-{rig.api}"
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(pool(pool_name, rig.api)))
    cluster.apply(gateway_key_secret(), namespace)
    gateway_env = {"LLMSERVE_BURST_RUNPOD_CA_FILE": str(rig.fake.proxy_cert)} if rig.api == "runpod" else {}
    gateway = Gateway(cluster, namespace, rig.system, gateway_env)
    try:
        cluster.apply(model(pool_name, replicas=3), namespace)

        # Two local replicas fill the cluster; the third waits Unschedulable and is rented instead.
        wait_for(lambda: burst_status(cluster, namespace).get("readyReplicas") == 1
                 and burst_status(cluster, namespace).get("localReadyReplicas") == 2,
                 timeout=180, message="2 local + 1 rented replica ready")  # fmt: skip
        burst = burst_status(cluster, namespace)
        assert burst["unschedulableReplicas"] == 1 and burst["pool"] == pool_name
        local_before = local_ready_pods(cluster, namespace)
        assert len(local_before) == 2
        [record] = pool_status(cluster, pool_name)["instances"]
        endpoint: str = record["endpoint"]
        assert endpoint.startswith("https://") and record["readySince"]
        secret = instance_secret(cluster, rig.system, record["name"])
        tls = engine_tls(rig, secret)
        if rig.api == "vastai":
            assert secret["tlsFingerprintSha256"] and "PRIVATE KEY" not in json.dumps(secret)

        # The gateway routes to all three; the rented engine takes requests once the local ones are busy.
        wait_for(lambda: gateway.backends("llama-8b") == 3, timeout=60, message="gateway sees 3 backends")
        client = gateway.client()

        def ask(i: int) -> str:
            reply = client.chat.completions.create(
                model="llama-8b", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=48
            )
            assert reply.usage is not None and reply.usage.completion_tokens > 0
            return reply.choices[0].message.content or ""

        served_by_rented = 0.0
        with ThreadPoolExecutor(max_workers=12) as pool_:
            for _round in range(5):  # bounded: 5 rounds of 12 concurrent requests at most
                answers = list(pool_.map(ask, range(12)))
                assert len(answers) == 12
                served_by_rented = requests_served(endpoint, secret["apiKey"], tls)
                if served_by_rented > 0:
                    break
        assert served_by_rented > 0, "the rented engine answered some of the gateway's requests"
        # It is public, so it answers nobody without its key.
        stranger = openai.OpenAI(base_url=endpoint + "/v1", api_key="guess", max_retries=0,
                                 http_client=httpx.Client(verify=tls))  # fmt: skip
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()
        # Nor on the routes vLLM's own --api-key leaves open: the engine guard refuses them all.
        with httpx.Client(verify=tls) as anyone:
            for method, path in (("POST", "/invocations"), ("POST", "/tokenize"), ("POST", "/pooling"),
                                 ("GET", "/metrics")):  # fmt: skip
                refused = anyone.request(method, endpoint + path, json={"model": "llama-8b", "prompt": "hi"})
                assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"}), path
        # The gateway reads its load through the guard with the instance key: no refused scrape.
        rented_label = endpoint.split("://", 1)[1].rstrip("/")  # how the gateway names a backend in logs
        assert f"event=scrape_failed backend={rented_label} " not in gateway.log_path.read_text(
            errors="replace"
        )

        # Scale down by one: the pending pod's claim goes, so the rented replica is given back; local stay.
        cluster.kubectl("scale", "llmserve", "llama", "-n", namespace, "--replicas=2")
        wait_for(lambda: not pool_status(cluster, pool_name).get("instances"), timeout=120,
                 message="the rented instance terminated and gone from status")  # fmt: skip
        assert local_ready_pods(cluster, namespace) == local_before
        assert burst_status(cluster, namespace).get("replicas") == 0
        wait_for(lambda: gateway.backends("llama-8b") == 2, timeout=30, message="gateway back to 2 local")
        assert ask(99)

        ledger = rig.fake.ledger()
        live = [i for i in ledger["instances"].values() if i["status"] != "terminated"]
        assert live == [], f"instances still billing that no status wants: {live}"
        assert 0 < ledger["total_usd"] <= MONTHLY_BUDGET_USD
        assert pool_status(cluster, pool_name)["spentThisMonthUsd"] <= MONTHLY_BUDGET_USD
        events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                 "involvedObject.kind=LLMServe").stdout  # fmt: skip
        assert "BurstScaleUp" in events and "BurstScaleDown" in events
    finally:
        gateway.stop()
    # No key in any log: the account's, the rented engine's, the gateway's.
    logs = {
        "operator": rig.operator.log_path.read_text(errors="replace"),
        "gateway": gateway.log_path.read_text(errors="replace"),
        "provider": rig.provider_log(),
    }
    for where, text in logs.items():
        assert rig.fake.account_key not in text, f"the provider account key is in the {where} log"
        assert secret["apiKey"] not in text, f"the instance key is in the {where} log"
        assert GATEWAY_KEY not in text, f"the gateway key is in the {where} log"


# One provider is enough: adoption is provider-neutral (and the Vast client is paced to seconds). Chosen
# here rather than skipped in the body, so no Vast rig (two operator restarts) is built for nothing.
@pytest.mark.parametrize("rig", ["runpod"], indirect=True)
def test_operator_killed_after_a_create_whose_answer_it_never_saw_adopts_the_instance_once(
    cluster: ClusterHandle, rig: Rig, namespace: str
) -> None:
    pool_name = "e2e-adopt"
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(pool(pool_name, rig.api)))
    # The create happens at the provider, then the connection drops: the operator's status holds only the
    # intent (name, no id) when it is killed.
    rig.fake.faults(lose_create_responses=1)
    cluster.apply(model(pool_name, replicas=3), namespace)
    created = wait_for(lambda: [i for i in rig.fake.instances().values() if i["status"] != "terminated"],
                       timeout=120, interval=0.05, message="the fake provider created an instance")  # fmt: skip
    assert rig.operator.process is not None
    rig.operator.process.kill()  # SIGKILL: no chance to write anything more
    rig.operator.process.wait()
    [record] = pool_status(cluster, pool_name)["instances"]
    assert record.get("id") is None and record["phase"] == "Requested"
    assert record["name"] == created[0]["name"]

    rig.operator.start()
    wait_for(lambda: burst_status(cluster, namespace).get("readyReplicas") == 1, timeout=120,
             message="the adopted instance serves")  # fmt: skip
    [adopted] = pool_status(cluster, pool_name)["instances"]
    assert adopted["id"] == created[0]["id"]
    assert len(rig.fake.instances()) == 1, "adopted, not created again"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=BurstAdopted"
    ).stdout
    assert "BurstAdopted" in events

    cluster.kubectl("delete", "llmserve", "llama", "-n", namespace, "--wait=false")
    wait_for(lambda: cluster.get("llmserve", "llama", namespace) is None, timeout=90, message="LLMServe gone")
    ledger = rig.fake.ledger()
    assert [i for i in ledger["instances"].values() if i["status"] != "terminated"] == []
    assert ledger["total_usd"] <= MONTHLY_BUDGET_USD
