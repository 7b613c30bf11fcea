"""The real apiserver refuses a bad BurstPool or LLMServe.spec.burst at apply time, naming the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from hack.devcluster.controlplane import wait_crd_established
from tests.support.cluster import ClusterHandle
from tests.support.manifests import llmserve

pytestmark = pytest.mark.cluster

POOL: dict[str, Any] = {
    "apiVersion": "llmserve.dev/v1alpha1",
    "kind": "BurstPool",
    "metadata": {"name": "apitest-runpod"},
    "spec": {
        "provider": "runpod",
        "credentialsSecret": {"name": "runpod-key"},
        "gpuPreferences": [{"gpuType": "NVIDIA H100 80GB HBM3", "maxUsdPerHour": 3.5}],
        "maxHourlySpend": 20,
        "monthlyBudget": 2000,
        "allowedNamespaces": {"matchLabels": {"burst": "allowed"}},
    },
}


@pytest.fixture
def pools(cluster: ClusterHandle) -> Iterator[ClusterHandle]:
    wait_crd_established(cluster.kubectl, "burstpools.llmserve.dev")
    yield cluster
    cluster.kubectl("delete", "burstpools", "--all", "--wait=false", check=False)


def _apply(cluster: ClusterHandle, manifest: dict[str, Any], namespace: str | None = None) -> Any:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    return cluster.kubectl(*args, input_text=json.dumps(manifest), check=False)


def test_valid_pool_is_stored_with_defaults_and_columns(pools: ClusterHandle) -> None:
    assert _apply(pools, POOL).returncode == 0
    stored = pools.get("burstpool", "apitest-runpod")
    assert stored is not None
    assert stored["spec"]["provisioningTimeoutSeconds"] == 900
    assert stored["spec"]["credentialsSecret"]["key"] == "apiKey"
    header = pools.kubectl("get", "bp").stdout.split("\n")[0].split()
    assert header == ["NAME", "PROVIDER", "INSTANCES", "READY", "USD/H", "SPENT", "BUDGET", "STATUS", "AGE"]
    explain = pools.kubectl("explain", "burstpool.spec.monthlyBudget").stdout
    assert "calendar month" in explain


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"credentialsSecret": None}, "credentialsSecret is required"),
        ({"provider": "vastai", "cloudType": "SECURE"}, "cloudType is only for provider runpod"),
        ({"gpuPreferences": [{"gpuType": "H100", "maxUsdPerHour": 50}]}, "at most maxHourlySpend"),
        ({"maxHourlySpend": 0}, "spec.maxHourlySpend"),
        ({"allowedNamespaces": None}, "allowedNamespaces"),
    ],
)
def test_bad_pool_is_refused_at_apply_time(
    pools: ClusterHandle, patch: dict[str, Any], expected: str
) -> None:
    manifest = copy.deepcopy(POOL)
    manifest["metadata"]["name"] = "apitest-bad"
    for key, value in patch.items():
        if value is None:
            manifest["spec"].pop(key)
        else:
            manifest["spec"][key] = value
    result = _apply(pools, manifest)
    assert result.returncode != 0
    assert expected in result.stderr
    assert pools.get("burstpool", "apitest-bad") is None


def test_llmserve_with_bad_burst_block_is_refused(cluster: ClusterHandle, namespace: str) -> None:
    result = _apply(cluster, llmserve(burst={"pool": "p", "maxReplicas": 0}), namespace)
    assert result.returncode != 0 and "spec.burst.maxReplicas" in result.stderr
    accepted = _apply(cluster, llmserve(burst={"pool": "apitest-runpod", "maxReplicas": 2}), namespace)
    assert accepted.returncode == 0, accepted.stderr
    stored = cluster.get("llmserve", "llama", namespace)
    assert stored is not None and stored["spec"]["burst"]["unschedulableSeconds"] == 60
