"""GPU and model profiles: the hardware numbers the batching timing model runs on, with their sources."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2
DEFAULT_GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model, keyed by the `nvidia.com/gpu.product` label that GPU feature discovery sets."""

    product: str
    memory_bytes: int
    hbm_bandwidth_bytes_per_second: float
    bf16_dense_flops: float
    fp8_dense_flops: float | None
    # Above this memory size (and not an A100) vLLM picks the larger API-server token budget.
    default_max_num_batched_tokens: int
    source: str


@dataclass(frozen=True)
class ModelSpec:
    """The architecture numbers of one model that decide weight and KV-cache traffic."""

    name: str
    parameters: float
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    source: str


@dataclass(frozen=True)
class Efficiency:
    """Calibration constants: how far real kernels fall short of the datasheet (see bench/sim_calibration.py)."""

    # Fraction of datasheet HBM bandwidth that decode kernels achieve.
    hbm_bandwidth_fraction: float = 0.80
    # Model FLOPs utilisation when a step is compute-bound (large batches, prefill chunks).
    compute_fraction: float = 0.50
    # Fixed CPU + kernel-launch cost of one engine step (scheduling, CUDA graph replay, sampling).
    step_overhead_seconds: float = 0.0015
    # Per-sequence CPU cost of a step (input preparation, sampling, detokenising, output processing).
    per_sequence_overhead_seconds: float = 0.000030
    # All-reduce cost per layer per step when tensor parallel > 1 (two all-reduces per layer over NVLink).
    # Fitted to vLLM's nightly benchmark `latency_llama70B_tp4` on H200 (Hopper, NVLink 4: 2077.5 ms for a
    # batch of 8, 32 in / 128 out; buildkite.com/vllm/performance-benchmark/builds/9515); the A100 row of
    # the same test (builds/9523) is within 7%. See bench/sim_calibration_70b.py and docs/benchmarks.md.
    tensor_parallel_overhead_seconds_per_layer: float = 0.000065
    # Peak activation memory + CUDA graphs + non-torch allocations that vLLM profiles before sizing KV.
    activation_reserve_bytes: int = 2 * GIB


# Datasheet figures; memory sizes are what `nvidia-smi` reports for the board.
GPUS: dict[str, GpuSpec] = {
    spec.product: spec
    for spec in (
        GpuSpec(
            product="NVIDIA-H100-80GB-HBM3",
            memory_bytes=81559 * MIB,
            hbm_bandwidth_bytes_per_second=3.35e12,
            bf16_dense_flops=989e12,
            fp8_dense_flops=1979e12,
            default_max_num_batched_tokens=8192,
            source="NVIDIA H100 Tensor Core GPU datasheet (H100 SXM: 80 GB HBM3, 3.35 TB/s, "
            "989 TFLOPS BF16 dense, 1979 TFLOPS FP8 dense)",
        ),
        GpuSpec(
            product="NVIDIA-A100-SXM4-80GB",
            memory_bytes=81920 * MIB,
            hbm_bandwidth_bytes_per_second=2.039e12,
            bf16_dense_flops=312e12,
            fp8_dense_flops=None,
            default_max_num_batched_tokens=2048,
            source="NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM: HBM2e, 2,039 GB/s, "
            "312 TFLOPS BF16 dense, no FP8 tensor cores)",
        ),
        GpuSpec(
            product="NVIDIA-L4",
            memory_bytes=23034 * MIB,
            hbm_bandwidth_bytes_per_second=300e9,
            bf16_dense_flops=121e12,
            fp8_dense_flops=242e12,
            default_max_num_batched_tokens=2048,
            source="NVIDIA L4 Tensor Core GPU datasheet (24 GB GDDR6, 300 GB/s, "
            "242 TFLOPS BF16 / 485 TFLOPS FP8 with sparsity, half that dense)",
        ),
    )
}

# Architecture numbers from each model's Hugging Face config.json (num_hidden_layers,
# num_key_value_heads, head_dim = hidden_size / num_attention_heads, max_position_embeddings).
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="llama-3.1-8b",
            parameters=8.03e9,
            num_layers=32,
            num_kv_heads=8,
            head_dim=128,
            max_position_embeddings=131072,
            source="meta-llama/Llama-3.1-8B-Instruct config.json (32 layers, 8 KV heads, head_dim 128, "
            "131072 positions); 8.03B parameters per the model card",
        ),
        ModelSpec(
            name="llama-3.1-70b",
            parameters=70.6e9,
            num_layers=80,
            num_kv_heads=8,
            head_dim=128,
            max_position_embeddings=131072,
            source="meta-llama/Llama-3.1-70B-Instruct config.json (80 layers, 8 KV heads, head_dim 128, "
            "131072 positions); 70.6B parameters per the model card",
        ),
    )
}

_MODEL_ALIASES: dict[str, str] = {
    "llama-3.1-8b": "llama-3.1-8b",
    "llama-3-8b": "llama-3.1-8b",
    "llama3-8b": "llama-3.1-8b",
    "llama-3.1-70b": "llama-3.1-70b",
    "llama-3.3-70b": "llama-3.1-70b",
    "llama-3-70b": "llama-3.1-70b",
    "llama3-70b": "llama-3.1-70b",
}

_DTYPE_BYTES: dict[str, float] = {"auto": 2.0, "bfloat16": 2.0, "float16": 2.0, "half": 2.0, "fp8": 1.0}


@dataclass(frozen=True)
class Profile:
    """A model served on `tensor_parallel_size` GPUs of one kind: everything the timing model needs."""

    gpu: GpuSpec
    model: ModelSpec
    tensor_parallel_size: int = 1
    weight_bytes_per_parameter: float = 2.0
    kv_cache_bytes_per_element: float = 2.0
    gpu_memory_utilization: float = 0.9
    efficiency: Efficiency = field(default_factory=Efficiency)

    @property
    def weight_bytes_per_gpu(self) -> float:
        return self.model.parameters * self.weight_bytes_per_parameter / self.tensor_parallel_size

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V for every layer and KV head (Llama-3.1-8B in bf16: 32*8*128*2*2 = 128 KiB)."""
        return (
            self.model.num_layers
            * self.model.num_kv_heads
            * self.model.head_dim
            * 2
            * (self.kv_cache_bytes_per_element)
        )

    @property
    def kv_bytes_per_token_per_gpu(self) -> float:
        # KV heads are split across TP ranks; with more ranks than heads they are replicated.
        kv_heads_per_gpu = max(1.0, self.model.num_kv_heads / self.tensor_parallel_size)
        return self.kv_bytes_per_token * kv_heads_per_gpu / self.model.num_kv_heads

    @property
    def kv_cache_bytes_per_gpu(self) -> float:
        budget = self.gpu.memory_bytes * self.gpu_memory_utilization
        return max(0.0, budget - self.weight_bytes_per_gpu - self.efficiency.activation_reserve_bytes)

    @property
    def kv_capacity_tokens(self) -> int:
        return int(self.kv_cache_bytes_per_gpu // self.kv_bytes_per_token_per_gpu)

    def num_kv_blocks(self, block_size: int) -> int:
        return self.kv_capacity_tokens // block_size

    @property
    def compute_flops_per_gpu(self) -> float:
        # FP8 weights only run on FP8 tensor cores where the GPU has them (A100 dequantises to bf16).
        if self.weight_bytes_per_parameter <= 1.0 and self.gpu.fp8_dense_flops is not None:
            return self.gpu.fp8_dense_flops
        return self.gpu.bf16_dense_flops

    @property
    def compute_tokens_per_second(self) -> float:
        """Tokens per second the GPUs can push through the weights when compute-bound (2 FLOPs/param)."""
        flops_per_token_per_gpu = 2.0 * self.model.parameters / self.tensor_parallel_size
        return self.compute_flops_per_gpu * self.efficiency.compute_fraction / flops_per_token_per_gpu

    def memory_seconds(self, context_tokens: int) -> float:
        """(weights/TP + context x kv_bytes_per_token/TP) / (bandwidth x efficiency): one pass over HBM."""
        bytes_read = self.weight_bytes_per_gpu + context_tokens * self.kv_bytes_per_token_per_gpu
        return bytes_read / (self.gpu.hbm_bandwidth_bytes_per_second * self.efficiency.hbm_bandwidth_fraction)

    def compute_seconds(self, num_tokens: int) -> float:
        return num_tokens / self.compute_tokens_per_second

    def step_seconds(
        self, num_sequences: int, context_tokens: int, prefill_tokens: int, decode_tokens: int
    ) -> float:
        """Duration of one engine step over `num_sequences` that reads `context_tokens` of KV.

        overhead + max(memory pass, compute for prefill + decode tokens): a roofline, so small decode
        batches are bandwidth-bound and big batches or prefill chunks become compute-bound.
        """
        if num_sequences <= 0:
            return 0.0
        eff = self.efficiency
        busy = max(self.memory_seconds(context_tokens), self.compute_seconds(prefill_tokens + decode_tokens))
        overhead = eff.step_overhead_seconds + eff.per_sequence_overhead_seconds * num_sequences
        if self.tensor_parallel_size > 1:
            overhead += eff.tensor_parallel_overhead_seconds_per_layer * self.model.num_layers
        return overhead + busy

    def describe(self) -> str:
        return (
            f"gpu={self.gpu.product} model={self.model.name} tp={self.tensor_parallel_size} "
            f"weight_gib_per_gpu={self.weight_bytes_per_gpu / GIB:.2f} "
            f"kv_cache_gib_per_gpu={self.kv_cache_bytes_per_gpu / GIB:.2f} "
            f"kv_capacity_tokens={self.kv_capacity_tokens}"
        )


def find_gpu(product: str | None) -> GpuSpec:
    """The GPU spec for a feature-discovery product label; unknown labels fall back to H100 with a warning."""
    if product:
        if product in GPUS:
            return GPUS[product]
        upper = product.upper()
        for key, family in (
            ("H100", "NVIDIA-H100-80GB-HBM3"),
            ("A100", "NVIDIA-A100-SXM4-80GB"),
            ("L4", "NVIDIA-L4"),
        ):
            if key in upper:
                log.warning("event=gpu_product_approximated product=%s using=%s", product, family)
                return GPUS[family]
    log.warning(
        "event=gpu_product_unknown product=%s using=%s known=%s",
        product,
        DEFAULT_GPU_PRODUCT,
        ",".join(GPUS),
    )
    return GPUS[DEFAULT_GPU_PRODUCT]


def find_model(name: str | None) -> ModelSpec:
    """The architecture for a model name such as meta-llama/Llama-3.1-8B-Instruct; unknown → Llama-3.1-8B."""
    normalized = (name or "").lower().replace("meta-llama-", "llama-").replace("_", "-")
    for alias, key in _MODEL_ALIASES.items():
        if alias in normalized:
            return MODELS[key]
    log.warning("event=model_unknown model=%s using=llama-3.1-8b known=%s", name, ",".join(MODELS))
    return MODELS["llama-3.1-8b"]


def dtype_bytes(dtype: str | None, flag: str) -> float:
    """Bytes per element for a vLLM dtype string (`auto`, `bfloat16`, `fp8`, ...)."""
    key = (dtype or "auto").lower()
    if key.startswith("fp8"):
        return 1.0
    if key in _DTYPE_BYTES:
        return _DTYPE_BYTES[key]
    log.warning("event=dtype_unknown flag=%s value=%s using=bfloat16", flag, dtype)
    return 2.0


def resolve_profile(
    gpu_product: str | None,
    model_name: str | None,
    tensor_parallel_size: int = 1,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
    gpu_memory_utilization: float = 0.9,
    efficiency: Efficiency | None = None,
) -> Profile:
    """Build the profile for a (GPU product, model, parallelism, precision) combination. Never raises."""
    weight_bytes = 1.0 if quantization and quantization.lower().startswith("fp8") else 2.0
    profile = Profile(
        gpu=find_gpu(gpu_product),
        model=find_model(model_name),
        tensor_parallel_size=max(1, tensor_parallel_size),
        weight_bytes_per_parameter=weight_bytes,
        kv_cache_bytes_per_element=dtype_bytes(kv_cache_dtype, "--kv-cache-dtype"),
        gpu_memory_utilization=gpu_memory_utilization,
        efficiency=efficiency or Efficiency(),
    )
    if profile.kv_capacity_tokens <= 0:
        log.warning("event=weights_do_not_fit %s", profile.describe())
    return profile


def blocks_for_tokens(tokens: int, block_size: int) -> int:
    return math.ceil(tokens / block_size) if tokens > 0 else 0
