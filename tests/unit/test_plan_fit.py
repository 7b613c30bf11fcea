"""The KV-cache fit check: weights, KV bytes per token and full-context sequences, with the numbers said."""

from __future__ import annotations

import pytest

from llmserve.plan.engineargs import EngineArgError, parse_memory_flags
from llmserve.plan.fit import ServingConfig, Verdict, check_fit, kv_bytes_per_token
from llmserve.plan.shapes import GPU_MEMORY, MODEL_SHAPES, find_gpu_memory, find_model_shape
from llmserve.sim.profiles import GIB, resolve_profile

LLAMA_8B = find_model_shape("meta-llama/Llama-3.1-8B-Instruct")
LLAMA_70B = find_model_shape("meta-llama/Llama-3.1-70B-Instruct")
H100 = GPU_MEMORY["NVIDIA-H100-80GB-HBM3"]
L4 = GPU_MEMORY["NVIDIA-L4"]


def test_llama_8b_kv_is_128_kib_per_token_in_bf16_and_half_in_fp8() -> None:
    assert LLAMA_8B is not None
    assert kv_bytes_per_token(LLAMA_8B) == 128 * 1024
    assert kv_bytes_per_token(LLAMA_8B, 1.0) == 64 * 1024


def test_every_table_entry_names_its_source_and_has_a_sane_shape() -> None:
    for model in MODEL_SHAPES.values():
        assert "config.json" in model.source and model.name in model.source
        assert model.num_layers > 0 and model.num_kv_heads > 0 and model.head_dim in (64, 96, 128, 256)
    for gpu in GPU_MEMORY.values():
        assert gpu.source and 8 * GIB < gpu.memory_bytes < 200 * GIB


def test_lookup_is_exact_about_models_and_gpus() -> None:
    assert find_model_shape("META-LLAMA/Llama-3.1-8B-Instruct") is LLAMA_8B
    assert find_model_shape("/models/meta-llama/Llama-3.1-8B-Instruct") is LLAMA_8B
    assert find_model_shape("meta-llama/Llama-3.1-8B") is LLAMA_8B  # the base model has the same shape
    assert find_model_shape("acme/secret-model-13b") is None
    assert find_gpu_memory("NVIDIA-A100-SXM4-40GB") is not None
    assert find_gpu_memory("NVIDIA-A100") is None  # 40 or 80 GB: not guessed


def test_capacity_agrees_with_the_simulator_profile() -> None:
    """The check and the simulated engine must agree on what fits, or the dev cluster would contradict it."""
    for model_name, product, tp in (
        ("meta-llama/Llama-3.1-8B-Instruct", "NVIDIA-H100-80GB-HBM3", 1),
        ("meta-llama/Llama-3.1-8B-Instruct", "NVIDIA-L4", 1),
        ("meta-llama/Llama-3.1-70B-Instruct", "NVIDIA-H100-80GB-HBM3", 4),
    ):
        model = find_model_shape(model_name)
        assert model is not None
        fit = check_fit(
            model, product, GPU_MEMORY[product].memory_bytes, ServingConfig(tensor_parallel_size=tp)
        )
        assert fit.kv_capacity_tokens == resolve_profile(product, model_name, tp).kv_capacity_tokens


def test_a_batch_that_cannot_fit_at_full_context_says_how_many_sequences_do() -> None:
    assert LLAMA_8B is not None
    fit = check_fit(
        LLAMA_8B, H100.product, H100.memory_bytes, ServingConfig(max_model_len=8192, max_num_seqs=256)
    )
    assert fit.verdict is Verdict.BATCH_DOES_NOT_FIT
    assert fit.kv_bytes_needed == 256 * GIB  # 256 x 8,192 tokens x 128 KiB
    assert fit.full_sequences == 54  # 54.7 GiB left after 14.96 GiB of weights and 2 GiB reserve
    assert fit.message.startswith("KV for 256 sequences \u00d7 8,192 tokens needs 256 GiB; 55 GiB is left")
    assert "at most 54 full sequences" in fit.message


def test_a_batch_that_fits_is_a_fit() -> None:
    assert LLAMA_8B is not None
    fit = check_fit(
        LLAMA_8B, H100.product, H100.memory_bytes, ServingConfig(max_model_len=8192, max_num_seqs=32)
    )
    assert fit.fits and fit.full_sequences == 54
    assert fit.message.endswith("54 full sequences fit")


def test_weights_that_do_not_load_are_reported_before_the_kv_cache() -> None:
    assert LLAMA_70B is not None
    fit = check_fit(LLAMA_70B, H100.product, H100.memory_bytes, ServingConfig(max_model_len=8192))
    assert fit.verdict is Verdict.WEIGHTS_DO_NOT_FIT
    assert "weights need 132 GiB (70.6B parameters \u00d7 2 bytes)" in fit.message
    assert "cannot load" in fit.message
    # Four GPUs (tensor parallel) hold it.
    split = check_fit(
        LLAMA_70B,
        H100.product,
        H100.memory_bytes,
        ServingConfig(tensor_parallel_size=4, max_model_len=8192, max_num_seqs=32),
    )
    assert split.fits


def test_a_context_longer_than_the_whole_cache_is_refused_like_vllm() -> None:
    assert LLAMA_8B is not None
    fit = check_fit(LLAMA_8B, L4.product, L4.memory_bytes, ServingConfig())
    assert fit.verdict is Verdict.CONTEXT_DOES_NOT_FIT
    assert fit.max_model_len == 131072
    assert "one sequence of --max-model-len 131,072 tokens needs 16 GiB" in fit.message
    assert f"at most {fit.kv_capacity_tokens:,} tokens fit" in fit.message


def test_fp8_kv_cache_doubles_the_sequences_that_fit() -> None:
    assert LLAMA_8B is not None
    bf16 = check_fit(LLAMA_8B, H100.product, H100.memory_bytes, ServingConfig(max_model_len=8192))
    fp8 = check_fit(
        LLAMA_8B, H100.product, H100.memory_bytes, ServingConfig(max_model_len=8192, kv_bytes_per_element=1.0)
    )
    assert fp8.full_sequences == 2 * bf16.full_sequences + 1  # 54.7 GiB holds 109 half-size sequences


def test_kv_heads_are_replicated_when_tensor_parallel_exceeds_them() -> None:
    phi = find_model_shape("microsoft/Phi-3-mini-4k-instruct")
    qwen = find_model_shape("Qwen/Qwen2.5-7B-Instruct")  # 4 KV heads
    assert phi is not None and qwen is not None
    on_8 = check_fit(qwen, H100.product, H100.memory_bytes, ServingConfig(tensor_parallel_size=8))
    assert on_8.kv_bytes_per_token == 2 * kv_bytes_per_token(qwen)  # each of 8 ranks holds 1 of 4 heads twice


def test_engine_args_are_read_in_both_flag_forms() -> None:
    flags = parse_memory_flags(["--max-model-len=16k", "--max-num-seqs", "64", "-tp", "2",
                                "--kv-cache-dtype=fp8", "--gpu-memory-utilization", "0.85", "--enforce-eager"])  # fmt: skip
    assert flags.max_model_len == 16000 and flags.max_num_seqs == 64 and flags.tensor_parallel_size == 2
    assert flags.gpu_memory_utilization == 0.85 and flags.kv_bytes_per_element == 1.0
    assert parse_memory_flags(["--quantization", "awq"]).weight_bytes_per_parameter == 0.5
    assert parse_memory_flags([]).max_model_len is None


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--max-model-len=lots"], "--max-model-len"), (["--max-num-seqs", "0"], "--max-num-seqs"),
     (["--gpu-memory-utilization=1.5"], "--gpu-memory-utilization")],
)  # fmt: skip
def test_bad_engine_args_name_the_flag(args: list[str], flag: str) -> None:
    with pytest.raises(EngineArgError, match=flag):
        parse_memory_flags(args)
