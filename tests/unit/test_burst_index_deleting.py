"""A deleting LLMServe, as kopf's slim index holds it, wants no rented replica from its BurstPool."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from llmserve.api.burstpool import BurstPoolSpec
from llmserve.controller.burst import _demands
from llmserve.controller.handlers import _slim_llmserve
from tests.support.manifests import llmserve

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
POOL = BurstPoolSpec.model_validate(
    {"provider": "runpod", "credentialsSecret": {"name": "k"}, "gpuPreferences": [{"gpuType": "H100", "maxUsdPerHour": 3}], "maxHourlySpend": 10,
     "monthlyBudget": 500, "allowedNamespaces": {}}
)  # fmt: skip


def indexes_with(deletion_timestamp: str | None) -> dict[str, Any]:
    manifest = llmserve(burst={"pool": "p", "maxReplicas": 2, "unschedulableSeconds": 0})
    manifest["metadata"] = {"name": "llama", "namespace": "ns", "uid": "u1", "generation": 1}
    if deletion_timestamp:
        manifest["metadata"]["deletionTimestamp"] = deletion_timestamp
    slim = _slim_llmserve(kopf.Body(manifest))
    return {
        "llmserve_index": {("ns", "llama"): [slim]},
        "pod_index": {},
        "namespace_labels_index": {"ns": [{}]},
        "burstpool_index": {},
    }


def test_the_slim_index_keeps_the_deletion_timestamp() -> None:
    slim = indexes_with("2026-11-30T12:00:00Z")["llmserve_index"][("ns", "llama")][0]
    assert slim["metadata"]["deletionTimestamp"] == "2026-11-30T12:00:00Z"


def test_a_deleting_llmserve_has_no_demand_so_its_instances_are_retired() -> None:
    live, _ = _demands("p", POOL, indexes_with(None), NOW)
    deleting, _ = _demands("p", POOL, indexes_with("2026-11-30T12:00:00Z"), NOW)
    assert list(live) == ["ns/llama"]
    assert deleting == {}
