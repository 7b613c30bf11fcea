"""The BurstPool and LLMServe.spec.burst models: defaults, refusals naming the field, and the CRD's shape."""

from typing import Any

import pytest
from pydantic import ValidationError

from llmserve.api import LLMServeSpec
from llmserve.api.burstpool import BurstPool, BurstPoolSpec
from llmserve.api.crd import burstpool_crd, llmserve_crd
from llmserve.controller.reconcile import parse_spec

RUNPOD: dict[str, Any] = {
    "provider": "runpod",
    "credentialsSecret": {"name": "runpod-key"},
    "gpuPreferences": [{"gpuType": "NVIDIA H100 80GB HBM3", "maxUsdPerHour": 3.5}],
    "maxHourlySpend": 20,
    "monthlyBudget": 2000,
    "allowedNamespaces": {"matchLabels": {"burst": "allowed"}},
}


def test_minimal_runpod_pool_gets_documented_defaults() -> None:
    spec = BurstPoolSpec.model_validate(RUNPOD)
    assert spec.provisioning_timeout_seconds == 900
    assert spec.credentials_secret is not None and spec.credentials_secret.key == "apiKey"
    assert spec.gpu_preferences[0].gpus_per_replica == 1
    assert spec.max_instances == 4
    assert spec.orphan_grace_seconds >= spec.drain_seconds


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"credentialsSecret": None}, "credentialsSecret"),
        ({"gpuPreferences": []}, "gpuPreferences"),
        ({"cloudType": "SECURE", "provider": "vastai"}, "cloudType"),
        ({"staticEndpoints": [{"url": "https://x"}]}, "staticEndpoints"),
        ({"gpuPreferences": [{"gpuType": "H100", "maxUsdPerHour": 50}]}, "maxUsdPerHour"),
        ({"maxHourlySpend": 0}, "maxHourlySpend"),
        ({"monthlyBudget": -1}, "monthlyBudget"),
        ({"provisioningTimeoutSeconds": 5}, "provisioningTimeoutSeconds"),
        ({"provider": "lambda"}, "provider"),
    ],
)
def test_invalid_pool_is_refused_naming_the_field(patch: dict[str, Any], field: str) -> None:
    raw = {k: v for k, v in {**RUNPOD, **patch}.items() if v is not None}
    with pytest.raises(ValidationError) as err:
        BurstPoolSpec.model_validate(raw)
    assert field.split(".")[-1].lower() in str(err.value).replace("_", "").lower()


def test_pool_without_allowed_namespaces_is_refused_rather_than_open() -> None:
    raw = {k: v for k, v in RUNPOD.items() if k != "allowedNamespaces"}
    with pytest.raises(ValidationError, match="allowedNamespaces"):
        BurstPoolSpec.model_validate(raw)


def test_static_pool_needs_endpoints_but_no_credentials() -> None:
    spec = BurstPoolSpec.model_validate(
        {
            "provider": "static",
            "staticEndpoints": [{"url": "https://gpu.example.internal/v1", "usdPerHour": 2}],
            "maxHourlySpend": 10,
            "monthlyBudget": 100,
            "allowedNamespaces": {},
        }
    )
    assert spec.static_endpoints[0].usd_per_hour == 2


def test_full_object_round_trips_through_the_wire_shape() -> None:
    pool = BurstPool.model_validate({"metadata": {"name": "runpod-h100"}, "spec": RUNPOD})
    assert BurstPool.model_validate(pool.to_wire()) == pool


def test_llmserve_burst_defaults_and_refusals() -> None:
    spec = LLMServeSpec.model_validate({"model": {"name": "m"}, "burst": {"pool": "runpod-h100"}})
    assert spec.burst is not None
    assert (spec.burst.max_replicas, spec.burst.unschedulable_seconds) == (1, 60)
    _, error = parse_spec({"model": {"name": "m"}, "burst": {"pool": "Not_A_Name"}})
    assert "burst.pool" in error
    _, error = parse_spec({"model": {"name": "m"}, "burst": {"pool": "p", "maxReplicas": 0}})
    assert "burst.maxReplicas" in error


def test_pool_crd_is_cluster_scoped_with_cel_rules_and_money_columns() -> None:
    crd = burstpool_crd()
    assert crd["spec"]["scope"] == "Cluster"
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {".credentialsSecret", ".gpuPreferences", ".staticEndpoints", ".cloudType"} <= {
        v["fieldPath"] for v in spec["x-kubernetes-validations"]
    }
    names = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert names == ["Provider", "Instances", "Ready", "USD/h", "Spent", "Budget", "Status", "Age"]
    assert "status" in version["subresources"] and "scale" not in version["subresources"]


def test_every_pool_spec_field_is_described_for_kubectl_explain() -> None:
    def walk(node: Any) -> None:
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{name} has no description"
            walk(prop)
            walk(prop.get("items", {}))

    walk(burstpool_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def test_llmserve_wide_columns_show_local_and_burst_apart() -> None:
    columns = llmserve_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority")}
    assert wide["Local"] == ".status.burst.localReadyReplicas"
    assert wide["Burst"] == ".status.burst.replicas"
    assert wide["Rented-USD"] == ".status.burst.spentThisMonthUsd"
