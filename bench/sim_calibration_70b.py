"""Calibrates the simulator's Llama-3.1-70B, tensor-parallel-4 replica (the autoscaling fleet's) against vLLM's own figures.

Reference: vLLM's nightly performance benchmark (Buildkite pipeline vllm/performance-benchmark), "Latency
tests": input 32 tokens, output 128 tokens, a fixed batch of 8, end-to-end latency of the batch, test
`latency_llama70B_tp4` (Llama-3 70B, bf16, tensor parallel 4):
  - H200:           mean 2077.53 ms   https://buildkite.com/vllm/performance-benchmark/builds/9515
  - A100-SXM4-80GB: mean 3990.59 ms   https://buildkite.com/vllm/performance-benchmark/builds/9523
The H100 has no row there; the H200 is the same Hopper die with the same NVLink 4 (only more and faster
HBM: 141 GB at 4.8 TB/s), so the constant fitted on the H200 row is the one the H100 profile uses, and the
A100 row (older NVLink 3) is the check.

A decode step of a 70B model at batch 8 reads ~35 GB of weights per GPU; what the datasheet bandwidth
alone predicts is ~30-40% short of both rows. The rest is the two all-reduces per layer that tensor
parallelism adds (`Efficiency.tensor_parallel_overhead_seconds_per_layer`), fitted here.

    python bench/sim_calibration_70b.py            # pure model, < 1 s
"""

from __future__ import annotations

import dataclasses

from llmserve.sim.batching import Engine, EngineConfig
from llmserve.sim.profiles import GPUS, MIB, Efficiency, Profile, find_model

MODEL = "meta-llama/Llama-3.1-70B-Instruct"  # same architecture as Llama-3 70B (80 layers, 8 KV heads)
H200 = dataclasses.replace(
    GPUS["NVIDIA-H100-80GB-HBM3"],
    product="NVIDIA-H200",
    memory_bytes=143771 * MIB,
    hbm_bandwidth_bytes_per_second=4.8e12,
    source="NVIDIA H200 Tensor Core GPU datasheet (H200 SXM: 141 GB HBM3e, 4.8 TB/s; compute as H100 SXM)",
)
PUBLISHED_MS = {"NVIDIA-H200": 2077.53, "NVIDIA-A100-SXM4-80GB": 3990.59}


def batch_latency_seconds(profile: Profile, batch: int = 8, prompt: int = 32, output: int = 128) -> float:
    """vLLM's latency test on the simulator: `batch` requests at once, until the last one finishes."""
    engine = Engine(profile, EngineConfig(max_num_seqs=256, max_model_len=8192))
    for index in range(batch):
        engine.submit(f"r{index}", prompt, output, 0.0)
    now = 0.0
    while engine.has_work:
        now = engine.step(now).end_time
    return now


def profile_on(gpu_product: str, efficiency: Efficiency) -> Profile:
    gpu = H200 if gpu_product == "NVIDIA-H200" else GPUS[gpu_product]
    return Profile(gpu=gpu, model=find_model(MODEL), tensor_parallel_size=4, efficiency=efficiency)


def fit_overhead_per_layer(gpu_product: str) -> float:
    """The per-layer tensor-parallel cost that makes the model match the published row (bisection)."""
    low, high = 0.0, 0.001
    for _ in range(40):
        middle = (low + high) / 2
        eff = Efficiency(tensor_parallel_overhead_seconds_per_layer=middle)
        predicted = batch_latency_seconds(profile_on(gpu_product, eff)) * 1000
        low, high = (middle, high) if predicted < PUBLISHED_MS[gpu_product] else (low, middle)
    return (low + high) / 2


def main() -> int:
    default = Efficiency()
    print("vLLM latency test, Llama-3 70B bf16 TP4, batch 8, 32 in / 128 out (end-to-end ms)")
    print("| GPU | vLLM published | model (defaults) | error | TP cost per layer that would match |")
    print("|---|---:|---:|---:|---:|")
    for gpu, published in PUBLISHED_MS.items():
        predicted = batch_latency_seconds(profile_on(gpu, default)) * 1000
        fitted = fit_overhead_per_layer(gpu)
        print(f"| {gpu} | {published:.0f} | {predicted:.0f} | {100 * (predicted / published - 1):+.1f}% | "
              f"{fitted * 1e6:.0f} µs |")  # fmt: skip
    h100 = batch_latency_seconds(profile_on("NVIDIA-H100-80GB-HBM3", default)) * 1000
    print(f"\nH100 (no published row): the model predicts {h100:.0f} ms with the defaults "
          f"({default.tensor_parallel_overhead_seconds_per_layer * 1e6:.0f} µs per layer)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
