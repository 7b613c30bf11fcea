"""What a rented engine is given and what it counts for, on the real cluster with the fake providers:
the model's Hugging Face token reaches the instance (and nothing else), the autoscaler counts a serving
rented replica as capacity, and a static pool's claims survive an operator restart.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hack.devcluster.processes import free_port
from tests.support.burst_accounts import (
    Rig,
    bursting,
    created_for,
    ends_clean,
    fake_accounts,
    scenario_of,
    wait_replacement,
    wait_serving,
)
from tests.support.burst_rig import events, pool_status
from tests.support.cluster import STATE_DIR, ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def rig(cluster: ClusterHandle, operator_process: OperatorProcess) -> Iterator[Rig]:
    with fake_accounts(cluster, operator_process, "burst-rented") as shared:
        yield shared


@pytest.fixture
def scenario(rig: Rig, cluster: ClusterHandle, namespace: str) -> Iterator[Rig]:
    with scenario_of(rig, cluster, namespace) as each:
        yield each


# -- the Hugging Face token ------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["runpod", "vastai"])
def test_hf_token_reaches_the_rented_engine_env_and_nothing_the_operator_writes(
    cluster: ClusterHandle, scenario: Rig, namespace: str, api: str
) -> None:
    account = scenario.accounts[api]
    token = "hf_" + secrets.token_urlsafe(24)
    cluster.kubectl("create", "secret", "generic", "hf", "-n", namespace, f"--from-literal=token={token}")
    manifest = bursting(account.pool)
    manifest["spec"]["model"]["hfTokenSecret"] = {"name": "hf", "key": "token"}
    cluster.apply(manifest, namespace)
    record = wait_serving(cluster, account, namespace, 0)
    # Both providers take it in the create's `env` (RunPod v2 `env` object, Vast.ai `env` map): the fake
    # keeps what it was sent.
    assert account.fake.instances()[record["id"]]["env"]["HF_TOKEN"] == token

    def text(*args: str) -> str:
        return cluster.kubectl(*args).stdout

    instance_secret = cluster.get("secret", f"burst-{record['name']}", scenario.system)
    assert instance_secret is not None
    places = {
        "operator log": scenario.operator.log_path.read_text(errors="replace"),
        "LLMServe": text("get", "llmserve", "llama", "-n", namespace, "-o", "json"),
        "BurstPool": text("get", "burstpool", account.pool, "-o", "json"),
        "Events": text("get", "events", "-A", "-o", "json"),
        "operator metrics": scenario.operator.metrics_text(),
        "instance Secret": json.dumps(
            {k: base64.b64decode(v).decode() for k, v in instance_secret["data"].items()}
        ),
    }
    for where, content in places.items():
        assert token not in content, f"the Hugging Face token is in the {where}"
    ends_clean(cluster, scenario, account, namespace)


def launch_refused(cluster: ClusterHandle, namespace: str) -> dict[str, Any]:
    return condition(cluster.get("llmserve", "llama", namespace), "BurstLaunchRefused")


def burst_owned_conditions(cluster: ClusterHandle, namespace: str) -> set[str]:
    """Condition types whose status entries the burst controller's field manager owns (server-side apply)."""
    full = json.loads(cluster.kubectl("get", "llmserve", "llama", "-n", namespace, "-o", "json",
                                      "--show-managed-fields").stdout)  # fmt: skip
    owned: set[str] = set()
    for entry in full["metadata"]["managedFields"]:
        if entry["manager"] == "llmserve-burst" and entry.get("subresource") == "status":
            for key in entry["fieldsV1"].get("f:status", {}).get("f:conditions", {}):
                if key.startswith("k:"):
                    owned.add(json.loads(key[2:])["type"])
    return owned


def test_a_missing_hf_token_secret_rents_nothing_and_says_so_in_a_condition_until_it_appears(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    manifest = bursting(account.pool)
    manifest["spec"]["model"]["hfTokenSecret"] = {"name": "late-secret"}
    cluster.apply(manifest, namespace)
    # Posted on the LLMServe and on the pool.
    message, *_ = wait_for(lambda: events(cluster, "BurstLaunchRefused", f"{namespace}/late-secret"),
                           timeout=60, message="BurstLaunchRefused naming the Secret")  # fmt: skip
    assert "spec.model.hfTokenSecret" in message and "HF_TOKEN" in message
    # And a condition that holds while the Secret is missing, written by the burst controller.
    refused = wait_for(lambda: launch_refused(cluster, namespace).get("status") == "True"
                       and launch_refused(cluster, namespace), timeout=60,
                       message="BurstLaunchRefused=True")  # fmt: skip
    assert refused["reason"] == "HfTokenSecretMissing"
    assert (
        f"{namespace}/late-secret" in refused["message"] and "spec.model.hfTokenSecret" in refused["message"]
    )
    assert "BurstLaunchRefused" in burst_owned_conditions(cluster, namespace)
    assert created_for(account, namespace) == {}, "nothing rented without the token"
    assert not pool_status(cluster, account.pool).get("instances")

    # The Secret appears: the condition clears and the replica is rented, with the token.
    token = "hf_" + secrets.token_urlsafe(24)
    cluster.kubectl(
        "create", "secret", "generic", "late-secret", "-n", namespace, f"--from-literal=HF_TOKEN={token}"
    )
    cleared = wait_for(lambda: launch_refused(cluster, namespace).get("status") == "False"
                       and launch_refused(cluster, namespace), timeout=60,
                       message="BurstLaunchRefused=False once the Secret exists")  # fmt: skip
    assert cleared["reason"] == "NotRefused"
    record = wait_replacement(cluster, account, namespace)  # any slot: each refused create used one up
    assert account.fake.instances()[record["id"]]["env"]["HF_TOKEN"] == token
    assert token not in json.dumps(cluster.get("llmserve", "llama", namespace))
    ends_clean(cluster, scenario, account, namespace)


# -- the autoscaler counts rented replicas -------------------------------------------------------------


def scaling(cluster: ClusterHandle, namespace: str) -> tuple[str, dict[str, Any]]:
    obj = cluster.get("llmserve", "llama", namespace)
    return condition(obj, "ScalingActive").get("reason", ""), dict(
        ((obj or {}).get("status") or {}).get("autoscaling") or {}
    )


def test_a_serving_rented_replica_gives_the_autoscaler_the_metrics_local_replicas_cannot(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    account.fake.faults(auth="revoked")  # nothing can be rented yet: local replicas only
    manifest = bursting(account.pool)
    manifest["spec"]["autoscaling"] = {"enabled": True, "intervalSeconds": 1}
    cluster.apply(manifest, namespace)
    # Local only: the one replica is Unschedulable, so the autoscaler has nothing to read and waits.
    wait_for(lambda: scaling(cluster, namespace)[0] == "WaitingForReplicas", timeout=60,
             message="autoscaler waiting with local replicas only")  # fmt: skip
    _, local_only = scaling(cluster, namespace)
    assert local_only.get("queueDepthPerReplica") is None and local_only.get("kvCacheUtilization") is None
    assert created_for(account, namespace) == {}

    account.fake.faults(auth="ok")
    scenario.clock.advance(30)  # past the backoff the refused key started
    wait_serving(cluster, account, namespace, 0)
    # The rented replica is capacity: its metrics drive the decision, and it is not missing capacity.
    wait_for(lambda: scaling(cluster, namespace)[0] == "ValidMetricFound", timeout=60,
             message="autoscaler scaling on the rented replica's metrics")  # fmt: skip
    _, with_burst = scaling(cluster, namespace)
    assert with_burst["queueDepthPerReplica"] is not None and with_burst["kvCacheUtilization"] is not None
    assert with_burst["scrapedReplicas"] == 0, (
        "no local replica was scraped: the metrics are the rented one's"
    )
    assert with_burst["desiredReplicas"] == 1
    ends_clean(cluster, scenario, scenario.accounts["runpod"], namespace)


# -- static pools ----------------------------------------------------------------------------------------


class StaticEngine:
    """A pre-provisioned OpenAI-compatible endpoint on loopback: a sim engine with its own key."""

    def __init__(self, key: str) -> None:
        self.port = free_port()
        self.log_path = STATE_DIR.parent / f"{STATE_DIR.name}-static-{self.port}.log"
        args = [sys.executable, "-m", "llmserve.cli", "sim", "engine", "--port", str(self.port), "--api-key", key,
                "--model", "meta-llama/Llama-3.1-8B-Instruct", "--served-model-name", "llama-8b",
                "--gpu-product", "NVIDIA-H100-80GB-HBM3", "--shutdown-grace-seconds", "0"]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: self._healthy(key), timeout=30, message="static endpoint up")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self, key: str) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"static engine exited: {self.log_path.read_text(errors='replace')[-2000:]}")
        try:
            response = httpx.get(f"{self.url}/health", headers={"Authorization": f"Bearer {key}"}, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def static_records(cluster: ClusterHandle) -> dict[str, str | None]:
    return {r["name"]: r.get("id") for r in pool_status(cluster, "faults-static").get("instances", [])}


def test_static_claims_survive_an_operator_restart_and_no_endpoint_is_claimed_twice(
    cluster: ClusterHandle, rig: Rig, namespace: str
) -> None:
    key = "static-" + secrets.token_urlsafe(16)
    cluster.kubectl(
        "create", "secret", "generic", "static-key", "-n", rig.system, f"--from-literal=apiKey={key}"
    )
    engines = [StaticEngine(key), StaticEngine(key)]
    try:
        pool = {
            "apiVersion": "llmserve.dev/v1alpha1", "kind": "BurstPool", "metadata": {"name": "faults-static"},
            "spec": {"provider": "static", "credentialsSecret": {"name": "static-key"},
                     "staticEndpoints": [{"url": e.url, "usdPerHour": 0.5} for e in engines],
                     "maxHourlySpend": 2.0, "monthlyBudget": 5.0, "drainSeconds": 1, "allowedNamespaces": {}},
        }  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps(pool))
        both = bursting("faults-static")
        both["spec"].update(replicas=2, burst={**both["spec"]["burst"], "maxReplicas": 2})
        cluster.apply(both, namespace)

        def both_claimed() -> dict[str, str | None]:
            found = static_records(cluster)
            return found if len(found) == 2 and all(found.values()) else {}

        claims = wait_for(both_claimed, timeout=60, message="both endpoints claimed")
        assert sorted(str(i) for i in claims.values()) == ["static-0-0", "static-1-0"]
        wait_for(lambda: pool_status(cluster, "faults-static").get("readyInstances") == 2, timeout=30,
                 message="both claimed endpoints serving")  # fmt: skip

        rig.operator.restart()  # the claims were only in the old process's memory before
        # A second model wants one too: the new operator must see both slots taken.
        qwen_spec = bursting("faults-static")["spec"]
        qwen_spec["model"] = {**qwen_spec["model"], "servedName": "qwen"}
        cluster.apply(llmserve("qwen", **qwen_spec), namespace)
        wait_for(lambda: (cluster.get("llmserve", "qwen", namespace) or {}).get("status", {}).get("burst", {})
                 .get("desiredReplicas") == 1, timeout=60, message="the new operator ticked with qwen's demand")  # fmt: skip
        ticks = {pool_status(cluster, "faults-static").get("spendUpdated")}

        def ticked_three_more_times() -> bool:
            ticks.add(pool_status(cluster, "faults-static").get("spendUpdated"))
            return len(ticks) >= 4

        wait_for(ticked_three_more_times, timeout=30, message="three more pool ticks")
        assert static_records(cluster) == claims, "the claims are intact after the restart"
        assert len(set(claims.values())) == 2
        qwen = cluster.get("llmserve", "qwen", namespace)
        assert qwen is not None and qwen["status"]["burst"].get("replicas", 0) == 0, (
            "no endpoint claimed twice"
        )
        assert not [m for n in claims for m in events(cluster, "BurstScaleDown", n)], "nothing was given back"
    finally:
        # Only this test's objects: the module's provider pools stay for the module's teardown.
        cluster.kubectl("delete", "llmserves", "--all", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "burstpool", "faults-static", "--wait=false", check=False)
        try:
            wait_for(lambda: not cluster.list("llmserves", namespace) and cluster.get("burstpool", "faults-static") is None,
                     timeout=60, message="static pool and its models finalized")  # fmt: skip
        finally:
            for engine in engines:
                engine.stop()
