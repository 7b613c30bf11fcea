"""`llmserve sim engine` argument handling: vLLM's shapes are accepted and unknown vLLM flags ignored."""

from __future__ import annotations

import pytest

from llmserve.sim.cli import ConfigError, engine_config, main, parse_engine_args
from llmserve.sim.profiles import resolve_profile


def test_accepts_vllm_serve_shape_with_a_positional_model_and_unknown_flags() -> None:
    args, ignored = parse_engine_args(
        ["meta-llama/Llama-3.1-8B-Instruct", "--dtype=bfloat16", "--gpu-memory-utilization", "0.85",
         "--enable-prefix-caching", "--swap-space", "4", "--port", "9001"]
    )  # fmt: skip
    assert args.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert args.served_model_name == ["meta-llama/Llama-3.1-8B-Instruct"]
    assert (args.port, args.gpu_memory_utilization, args.host) == (9001, 0.85, "127.0.0.1")
    assert ignored == ["--dtype=bfloat16", "--swap-space", "4"]
    assert args.enable_prefix_caching  # a vLLM flag the simulator now models


def test_served_model_names_may_be_repeated() -> None:
    args, _ = parse_engine_args(["--model", "m", "--served-model-name", "a", "b", "--served-model-name", "c"])
    assert args.served_model_name == ["a", "b", "c"]


def test_default_token_budget_follows_vllm_per_gpu_defaults() -> None:
    args, _ = parse_engine_args(["--model", "meta-llama/Llama-3.1-8B-Instruct"])
    h100 = engine_config(args, resolve_profile("NVIDIA-H100-80GB-HBM3", args.model))
    a100 = engine_config(args, resolve_profile("NVIDIA-A100-SXM4-80GB", args.model))
    assert (h100.max_num_batched_tokens, a100.max_num_batched_tokens) == (8192, 2048)
    assert h100.max_model_len == 131072 and h100.max_num_seqs == 256


def test_max_model_len_that_does_not_fit_the_kv_cache_is_refused_like_vllm() -> None:
    args, _ = parse_engine_args(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "131072"])
    with pytest.raises(ConfigError, match="--max-model-len 131072"):
        engine_config(args, resolve_profile("NVIDIA-L4", args.model))


def test_a_bad_output_length_distribution_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        parse_engine_args(["--output-length-distribution", "zipf"])
    assert caught.value.code == 2


def test_unknown_subcommand_is_an_error() -> None:
    assert main(["cloud-provider-that-does-not-exist"]) == 2
