"""Where the gateway learns each replica's batch slots: the LLMServe's engine args or the static file."""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.api.engine_args import max_num_seqs
from llmserve.gateway.cluster_view import ClusterView
from llmserve.gateway.static import load_config
from tests.unit.test_gateway_discovery import endpoint_slice, llmserve


def with_args(args: list[Any]) -> dict[str, Any]:
    obj = llmserve("llama")
    obj["spec"]["engine"] = {"kind": "vllm", "args": args}
    return obj


@pytest.mark.parametrize(
    ("args", "slots"),
    [
        (["--max-model-len=8192", "--max-num-seqs=8"], 8),
        (["--max-num-seqs", "32"], 32),
        (["--max-model-len=8192"], None),
        (["--max-num-seqs=lots"], None),
        (["--max-num-seqs=0"], None),
        ([], None),
    ],
)
def test_max_num_seqs_is_read_from_the_engine_args_in_both_spellings(
    args: list[Any], slots: int | None
) -> None:
    assert max_num_seqs(args) == slots


def test_discovered_backends_carry_their_llmserves_batch_slots() -> None:
    view = ClusterView()
    view.sync_llmserves([with_args(["--max-num-seqs=8"])], None)
    view.sync_slices([endpoint_slice("llama", {"10.0.0.1": True, "10.0.0.2": True})], None)
    (route,) = view.routes()
    assert [b.batch_slots for b in route.backends] == [8, 8]


def test_a_simulator_without_the_flag_gets_the_simulators_default_as_the_autoscaler_does() -> None:
    obj = llmserve("llama")
    obj["spec"]["engine"] = {"kind": "simulator"}
    view = ClusterView()
    view.sync_llmserves([obj], None)
    view.sync_slices([endpoint_slice("llama", {"10.0.0.1": True})], None)
    (route,) = view.routes()
    assert route.backends[0].batch_slots == 256


def test_the_static_file_sets_slots_per_model_and_a_backend_may_override_them() -> None:
    config = load_config(
        """
models:
  - name: llama
    maxNumSeqs: 8
    backends:
      - http://127.0.0.1:8001
      - {url: "http://127.0.0.1:8002", maxNumSeqs: 64}
  - name: other
    backends: [http://127.0.0.1:8003]
"""
    )
    llama, other = config.routes
    assert [b.batch_slots for b in llama.backends] == [8, 64]
    assert other.backends[0].batch_slots is None  # the gateway's --default-batch-slots applies


@pytest.mark.parametrize("value", ["0", "-3", "eight", "true"])
def test_a_bad_max_num_seqs_in_the_static_file_names_the_field(value: str) -> None:
    with pytest.raises(ValueError, match=r"models\[0\].maxNumSeqs"):
        load_config(f"models: [{{name: m, maxNumSeqs: {value}, backends: []}}]")


def test_a_route_carries_its_llmserves_ttft_target_for_the_gateway_queues_order() -> None:
    with_slo, without = llmserve("llama"), llmserve("mistral")
    with_slo["spec"]["autoscaling"] = {
        "enabled": True,
        "slo": {"timeToFirstTokenSeconds": 1.5, "interTokenLatencySeconds": 0.1},
    }
    view = ClusterView()
    view.sync_llmserves([with_slo, without], None)
    view.sync_slices(
        [endpoint_slice("llama", {"10.0.0.1": True}), endpoint_slice("mistral", {"10.0.0.2": True})], None
    )
    late_after = {route.served_name: route.late_after_seconds for route in view.routes()}
    assert late_after == {"llama": 1.5, "mistral": None}


def test_the_static_file_sets_a_models_ttft_target_and_a_bad_one_names_the_field() -> None:
    (route,) = load_config("models: [{name: m, ttftTargetSeconds: 2.5, backends: []}]").routes
    assert route.late_after_seconds == 2.5
    (plain,) = load_config("models: [{name: m, backends: []}]").routes
    assert plain.late_after_seconds is None
    for value in ("0", "-1", "soon", "true", "601"):
        with pytest.raises(ValueError, match=r"models\[0\].ttftTargetSeconds"):
            load_config(f"models: [{{name: m, ttftTargetSeconds: {value}, backends: []}}]")
