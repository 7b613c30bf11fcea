"""bench/routing_cluster.py measures what it says: fixed replicas whose batch slots the gateway knows."""

from __future__ import annotations

from bench import routing, routing_cluster

from llmserve.api.engine_args import batch_slots
from llmserve.api.llmserve import LLMServe


def test_the_benchmarked_llmserve_is_valid_fixed_in_size_and_tells_the_gateway_its_batch_slots() -> None:
    args = routing_cluster.parse_args(["--replicas", "6", "--max-num-seqs", "8"])
    manifest = routing_cluster.llmserve(args)

    spec = LLMServe.model_validate(manifest).spec
    assert spec.min_replicas == spec.max_replicas == 6
    assert spec.autoscaling.enabled is False
    # Without known slots the gateway would take 256 per replica and never see one as full.
    assert batch_slots(spec) == 8
    assert spec.served_name(manifest["metadata"]["name"]) == routing.SERVED
