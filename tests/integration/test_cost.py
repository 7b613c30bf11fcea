"""Cost per model on the dev cluster: status.cost, the metrics, the wide column, and a restart in between."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import OpenAI

from llmserve.cost.prices import EXAMPLE_USD_PER_GPU_HOUR
from tests.support.cluster import ClusterHandle, OperatorProcess, wait_for
from tests.support.manifests import engine_key_headers, llmserve, wait_ready

pytestmark = pytest.mark.cluster

H100_PRICE = EXAMPLE_USD_PER_GPU_HOUR["NVIDIA-H100-80GB-HBM3"]


def cost_of(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    return dict(((cluster.get("llmserve", name, namespace) or {}).get("status") or {}).get("cost") or {})


def test_cost_per_model_shows_in_status_metrics_and_kubectl(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve("priced", minReplicas=1, maxReplicas=1), namespace)
    obj = wait_ready(cluster, namespace, "priced", 1)
    pods = cluster.list("pods", namespace, obj["status"]["selector"])
    # straight to the engine, with its LLMServe's engine key (docs/security.md)
    engine_key = engine_key_headers(cluster, namespace, "priced")["Authorization"].removeprefix("Bearer ")
    client = OpenAI(
        base_url=f"http://{pods[0]['status']['podIP']}:8000/v1", api_key=engine_key, max_retries=0
    )
    served = 0
    for _ in range(5):
        reply = client.completions.create(model="llama-8b", prompt="the cost of serving", max_tokens=40)
        assert reply.usage is not None
        served += reply.usage.completion_tokens
    assert served == 200

    def counted() -> dict[str, Any] | None:
        cost = cost_of(cluster, namespace, "priced")
        ok = cost.get("outputTokens") == served and cost.get("local", {}).get("gpuHours", 0) > 0
        return cost if ok else None

    cost = wait_for(counted, timeout=60, message="status.cost counting the tokens and the GPU")
    assert cost["pricesAreExamples"] is True
    assert cost["local"]["usd"] == pytest.approx(cost["local"]["gpuHours"] * H100_PRICE, rel=1e-3)
    assert cost["rented"] == {"gpuHours": 0, "usd": 0}
    assert cost["totalUsd"] == pytest.approx(cost["local"]["usd"], rel=1e-6)
    assert cost["usdPerMillionOutputTokens"] == pytest.approx(cost["totalUsd"] / served * 1e6, rel=1e-3)
    assert [c["pod"] for c in cost["engineCounters"]] == [pods[0]["metadata"]["name"]]

    full = json.loads(
        cluster.kubectl(
            "get", "llmserve", "priced", "-n", namespace, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    managers = {
        (m["manager"], m["operation"], m.get("subresource")) for m in full["metadata"]["managedFields"]
    }
    assert ("llmserve-cost", "Apply", "status") in managers

    labels = f'llmserve="priced",namespace="{namespace}"'  # the exposition sorts label names
    wait_for(lambda: f'llmserve_cost_output_tokens{{{labels}}} {float(served)}' in operator_process.metrics_text(),
             timeout=30, message="llmserve_cost_output_tokens")  # fmt: skip
    text = operator_process.metrics_text()
    assert f'llmserve_cost_gpu_hours{{{labels},source="local"}}' in text
    assert f"llmserve_cost_usd_per_million_output_tokens{{{labels}}}" in text
    assert 'llmserve_cost_local_usd_per_gpu_hour{gpu_product="NVIDIA-H100-80GB-HBM3"} 1.9' in text

    wide = cluster.kubectl("get", "llms", "priced", "-n", namespace, "-o", "wide").stdout.splitlines()
    column = wide[0].index("USD/MTOK")  # the last column; the Message column before it has spaces
    # No new tokens since `cost` was read while the GPU kept costing: the figure can only have grown.
    assert float(wide[1][column:].strip()) >= cost["usdPerMillionOutputTokens"] > 0

    # A restart neither loses the month nor counts the engine's tokens twice.
    before = cost_of(cluster, namespace, "priced")
    operator_process.restart()
    after = wait_for(lambda: (c := cost_of(cluster, namespace, "priced")).get("lastUpdateTime") != before["lastUpdateTime"] and c,
                     timeout=60, message="the meter advancing after a restart")  # fmt: skip
    assert after["outputTokens"] == served
    assert after["local"]["gpuHours"] >= before["local"]["gpuHours"] > 0
    assert after["month"] == before["month"]
