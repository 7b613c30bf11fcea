"""CapacityFit for an LLMServe spec: from its model, GPU and engine args; Unknown (never an error) when unsure."""

from __future__ import annotations

from typing import Any

from llmserve.api.llmserve import LLMServeSpec
from llmserve.plan.specfit import fit_for_spec, quantity_bytes


def spec(**overrides: Any) -> LLMServeSpec:
    raw: dict[str, Any] = {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"args": ["--max-model-len=8192", "--max-num-seqs=32"]},
        "resources": {"gpus": 1, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    return LLMServeSpec.model_validate(raw)


def test_a_fitting_manifest_is_true() -> None:
    fit = fit_for_spec(spec())
    assert (fit.status, fit.reason) == ("True", "Fits")
    assert fit.message.endswith("54 full sequences fit")


def test_the_same_manifest_on_a_24_gib_gpu_cannot_hold_the_batch() -> None:
    fit = fit_for_spec(spec(resources={"gpuProduct": "NVIDIA-L4"}))
    assert (fit.status, fit.reason) == ("False", "BatchDoesNotFit")
    assert "KV for 32 sequences \u00d7 8,192 tokens needs 32 GiB; 3.3 GiB is left" in fit.message
    assert "at most 3 full sequences" in fit.message


def test_a_70b_model_on_one_gpu_cannot_load_but_on_four_it_does() -> None:
    big = {"name": "meta-llama/Llama-3.3-70B-Instruct"}
    assert fit_for_spec(spec(model=big)).reason == "WeightsDoNotFit"
    assert fit_for_spec(spec(model=big, resources={"gpus": 4})).status == "True"
    # -tp in the engine args wins over resources.gpus, as it does for vLLM.
    args = {"args": ["--max-model-len=8192", "--max-num-seqs=32", "--tensor-parallel-size=2"]}
    two = fit_for_spec(spec(model=big, resources={"gpus": 4}, engine=args))
    assert two.reason == "BatchDoesNotFit" and "on 2\u00d7 NVIDIA-H100-80GB-HBM3" in two.message


def test_default_context_is_the_models_and_fp8_kv_counts() -> None:
    fit = fit_for_spec(spec(engine={"args": ["--max-num-seqs=8"]}))
    assert fit.result is not None and fit.result.max_model_len == 131072
    assert fit.reason == "BatchDoesNotFit"  # 8 x 16 GiB of KV > 55 GiB
    fp8 = fit_for_spec(spec(engine={"args": ["--max-num-seqs=6", "--kv-cache-dtype=fp8"]}))
    assert fp8.status == "True"


def test_an_unknown_model_is_not_checked_and_says_how_to_describe_it() -> None:
    fit = fit_for_spec(spec(model={"name": "acme/private-13b"}))
    assert (fit.status, fit.reason) == ("Unknown", "ModelUnknown")
    assert "could not check" in fit.message and "spec.model.shape" in fit.message
    described = spec(model={"name": "acme/private-13b",
                            "shape": {"parametersBillions": 13, "numLayers": 40, "numKvHeads": 40, "headDim": 128,
                                      "maxPositionEmbeddings": 4096}})  # fmt: skip
    fit = fit_for_spec(described)
    assert (
        fit.reason == "BatchDoesNotFit" and fit.result is not None
    )  # a 13B model without GQA: 800 KiB/token
    assert fit.result.kv_bytes_per_token == 40 * 40 * 128 * 2 * 2
    assert "KV for 32 sequences \u00d7 8,192 tokens needs 200 GiB" in fit.message


def test_an_unknown_gpu_is_not_checked_unless_its_memory_is_given() -> None:
    fit = fit_for_spec(spec(resources={"gpuProduct": "ACME-X1"}))
    assert (fit.status, fit.reason) == ("Unknown", "GpuUnknown") and "gpuMemory" in fit.message
    unset = LLMServeSpec.model_validate({"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}})
    assert "gpuProduct is not set" in fit_for_spec(unset).message
    fit = fit_for_spec(spec(resources={"gpuProduct": "ACME-X1", "gpuMemory": "24Gi"}))
    assert fit.status == "False" and "ACME-X1" in fit.message


def test_bad_engine_args_and_no_gpus_are_unknown_not_errors() -> None:
    fit = fit_for_spec(spec(engine={"args": ["--max-num-seqs=lots"]}))
    assert (fit.status, fit.reason) == ("Unknown", "InvalidEngineArgs") and "--max-num-seqs" in fit.message
    sim = spec(engine={"kind": "simulator"}, resources={"gpus": 0})
    assert fit_for_spec(sim).reason == "NoGpus"


def test_quantities() -> None:
    assert quantity_bytes("48Gi") == 48 * 1024**3
    assert quantity_bytes("40G") == 40 * 10**9
    assert quantity_bytes("1.5Ti") == int(1.5 * 1024**4)


def test_an_unset_batch_is_checked_at_the_engines_own_default() -> None:
    """vLLM picks 1024 sequences on an H100 (256 on an A100 or a 24 GiB GPU); the simulator always 256."""
    vllm_h100 = fit_for_spec(spec(engine={"args": ["--max-model-len=8192"]}))
    assert vllm_h100.result is not None and vllm_h100.result.max_num_seqs == 1024
    assert vllm_h100.message.endswith("[--max-num-seqs is not set: vLLM's default on this GPU is 1024]")
    vllm_a100 = fit_for_spec(
        spec(engine={"args": ["--max-model-len=8192"]}, resources={"gpuProduct": "NVIDIA-A100-SXM4-80GB"})
    )
    assert vllm_a100.result is not None and vllm_a100.result.max_num_seqs == 256
    simulated = fit_for_spec(spec(engine={"kind": "simulator", "args": ["--max-model-len=8192"]}))
    assert simulated.result is not None and simulated.result.max_num_seqs == 256
    assert "the simulator's default is 256" in simulated.message


def test_without_a_gpu_product_the_smallest_gpu_in_the_cluster_is_checked() -> None:
    unpinned = LLMServeSpec.model_validate({"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
                                            "engine": {"args": ["--max-model-len=8192", "--max-num-seqs=32"]}})  # fmt: skip
    fit = fit_for_spec(unpinned, ["NVIDIA-H100-80GB-HBM3", "NVIDIA-L4", "ACME-X1", "NVIDIA-L4"])
    assert fit.reason == "BatchDoesNotFit"
    assert fit.message.startswith(
        "spec.resources.gpuProduct is not set; on the cluster's smallest GPU (NVIDIA-L4): KV for 32"
    )
    assert fit_for_spec(unpinned, ["NVIDIA-H100-80GB-HBM3"]).status == "True"
    assert fit_for_spec(unpinned, ["ACME-X1"]).reason == "GpuUnknown"
