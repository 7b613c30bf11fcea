"""GPU/model profiles: capacity arithmetic, lookups by feature-discovery label, and safe fallbacks."""

from __future__ import annotations

import logging

import pytest

from llmserve.sim.profiles import GPUS, resolve_profile


def test_every_profile_names_its_source() -> None:
    assert all(spec.source for spec in GPUS.values())
    profile = resolve_profile("NVIDIA-L4", "meta-llama/Llama-3.1-8B-Instruct")
    assert profile.model.source and profile.gpu.source


@pytest.mark.parametrize(
    ("product", "bandwidth"),
    [("NVIDIA-H100-80GB-HBM3", 3.35e12), ("NVIDIA-A100-SXM4-80GB", 2.039e12), ("NVIDIA-L4", 300e9)],
)
def test_gpu_feature_discovery_labels_pick_the_right_bandwidth(product: str, bandwidth: float) -> None:
    assert (
        resolve_profile(product, "meta-llama/Llama-3.1-8B-Instruct").gpu.hbm_bandwidth_bytes_per_second
        == bandwidth
    )


def test_an_unknown_gpu_and_model_fall_back_to_h100_llama_8b_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmserve.sim.profiles"):
        profile = resolve_profile("AMD-MI300X", "acme/mystery-13b")
    assert profile.gpu.product == "NVIDIA-H100-80GB-HBM3"
    assert profile.model.name == "llama-3.1-8b"
    assert "event=gpu_product_unknown" in caplog.text and "event=model_unknown" in caplog.text


def test_llama_70b_fits_on_four_h100s_but_not_on_one() -> None:
    tp4 = resolve_profile(
        "NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-70B-Instruct", tensor_parallel_size=4
    )
    tp1 = resolve_profile(
        "NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-70B-Instruct", tensor_parallel_size=1
    )
    assert tp4.kv_bytes_per_token == 80 * 8 * 128 * 2 * 2
    assert tp4.kv_capacity_tokens > 300_000
    assert tp1.kv_capacity_tokens == 0


def test_an_l4_holds_llama_8b_with_a_small_kv_cache_and_slow_decode() -> None:
    l4 = resolve_profile("NVIDIA-L4", "meta-llama/Llama-3.1-8B-Instruct")
    h100 = resolve_profile("NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-8B-Instruct")
    assert 10_000 < l4.kv_capacity_tokens < 50_000
    assert l4.step_seconds(1, 100, 0, 1) > 8 * h100.step_seconds(1, 100, 0, 1)


def test_fp8_weights_and_kv_cache_halve_their_bytes() -> None:
    bf16 = resolve_profile("NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-8B-Instruct")
    fp8 = resolve_profile(
        "NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-8B-Instruct", quantization="fp8", kv_cache_dtype="fp8"
    )
    assert fp8.weight_bytes_per_gpu == pytest.approx(bf16.weight_bytes_per_gpu / 2)
    assert fp8.kv_bytes_per_token == bf16.kv_bytes_per_token / 2
    assert fp8.step_seconds(1, 0, 0, 1) < bf16.step_seconds(1, 0, 0, 1)
