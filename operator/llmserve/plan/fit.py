"""KV-cache fit: do a model's weights load, and how many full-context sequences fit, on one replica's GPUs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from llmserve.sim.profiles import GIB, Efficiency, ModelSpec

# Peak activations, CUDA graphs and non-torch allocations vLLM profiles before it sizes the KV cache;
# the same reserve the simulator's profiles use, so the check and the simulated engine agree.
ACTIVATION_RESERVE_BYTES = Efficiency().activation_reserve_bytes
DEFAULT_MAX_NUM_SEQS = (
    256  # vLLM's default batch on GPUs under 70 GiB and A100s, and the simulator's everywhere
)
LARGE_GPU_MAX_NUM_SEQS = 1024  # vLLM's API-server default on >= 70 GiB GPUs other than A100
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
TIMES = "\u00d7"  # the multiplication sign, for messages people read


class Verdict(StrEnum):
    FITS = "Fits"
    WEIGHTS_DO_NOT_FIT = "WeightsDoNotFit"
    CONTEXT_DOES_NOT_FIT = "ContextDoesNotFit"
    BATCH_DOES_NOT_FIT = "BatchDoesNotFit"


@dataclass(frozen=True)
class ServingConfig:
    """How a replica runs the model: vLLM's memory flags and the GPUs it gets."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    max_model_len: int | None = None  # None: the model's context length, as vLLM defaults
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    weight_bytes_per_parameter: float = 2.0
    kv_bytes_per_element: float = 2.0


def vllm_default_max_num_seqs(gpu_product: str, gpu_memory_bytes: int) -> int:
    """What `vllm serve` picks without --max-num-seqs (EngineArgs.get_batch_defaults, vLLM 0.10-0.11)."""
    if gpu_memory_bytes >= 70 * GIB and "a100" not in gpu_product.lower():
        return LARGE_GPU_MAX_NUM_SEQS
    return DEFAULT_MAX_NUM_SEQS


def kv_bytes_per_token(model: ModelSpec, kv_bytes_per_element: float = 2.0) -> float:
    """K and V for every layer and KV head (Llama-3.1-8B in bf16: 32 x 8 x 128 x 2 x 2 = 128 KiB)."""
    return model.num_layers * model.num_kv_heads * model.head_dim * 2 * kv_bytes_per_element


@dataclass(frozen=True)
class FitResult:
    """The memory of one replica, summed over its GPUs, and what it means for the configured batch."""

    verdict: Verdict
    model: str
    gpu_product: str
    gpus: int
    weight_bytes: float
    usable_bytes: float  # memory x utilization over all GPUs, before weights
    reserve_bytes: float
    kv_cache_bytes: float  # what is left for KV after weights and the activation reserve
    kv_bytes_per_token: float  # over all GPUs, counting KV heads replicated when TP > KV heads
    max_model_len: int
    max_num_seqs: int
    kv_capacity_tokens: int
    full_sequences: int  # sequences of max_model_len tokens the KV cache holds at once
    message: str

    @property
    def kv_bytes_needed(self) -> float:
        """KV for the whole configured batch at full context."""
        return self.max_num_seqs * self.max_model_len * self.kv_bytes_per_token

    @property
    def kv_bytes_per_sequence(self) -> float:
        return self.max_model_len * self.kv_bytes_per_token

    @property
    def fits(self) -> bool:
        return self.verdict is Verdict.FITS


def gib(value: float) -> str:
    """Human GiB: one decimal below 10 GiB, whole numbers with separators above."""
    amount = value / GIB
    return f"{amount:,.1f} GiB" if abs(amount) < 10 else f"{amount:,.0f} GiB"


def check_fit(model: ModelSpec, gpu_product: str, gpu_memory_bytes: int, config: ServingConfig) -> FitResult:
    """Weights, KV bytes per token and full-context sequences for `config` on `gpu_memory_bytes` GPUs.

    Per GPU, like vLLM: KV budget = memory x utilization - weights / TP - activation reserve; KV heads
    are split across TP ranks (replicated when there are more ranks than heads). Totals are over the
    replica's GPUs so messages read as one replica.
    """
    tp = max(1, config.tensor_parallel_size)
    weight_bytes = model.parameters * config.weight_bytes_per_parameter
    usable_per_gpu = gpu_memory_bytes * config.gpu_memory_utilization
    kv_per_gpu = max(0.0, usable_per_gpu - weight_bytes / tp - ACTIVATION_RESERVE_BYTES)
    per_token = kv_bytes_per_token(model, config.kv_bytes_per_element)
    per_token_per_gpu = per_token * max(1.0, model.num_kv_heads / tp) / model.num_kv_heads
    capacity_tokens = int(kv_per_gpu // per_token_per_gpu)
    max_model_len = config.max_model_len or model.max_position_embeddings
    full_sequences = capacity_tokens // max_model_len
    values = {
        "model": model.name,
        "gpu_product": gpu_product,
        "gpus": tp,
        "weight_bytes": weight_bytes,
        "usable_bytes": usable_per_gpu * tp,
        "reserve_bytes": float(ACTIVATION_RESERVE_BYTES * tp),
        "kv_cache_bytes": kv_per_gpu * tp,
        "kv_bytes_per_token": per_token_per_gpu * tp,
        "max_model_len": max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "kv_capacity_tokens": capacity_tokens,
        "full_sequences": full_sequences,
    }
    on = f"{tp}{TIMES} {gpu_product}" if tp > 1 else f"one {gpu_product}"
    if usable_per_gpu - weight_bytes / tp - ACTIVATION_RESERVE_BYTES <= 0:
        verdict = Verdict.WEIGHTS_DO_NOT_FIT
        message = (
            f"weights need {gib(weight_bytes)} ({model.parameters / 1e9:.1f}B parameters {TIMES} "
            f"{config.weight_bytes_per_parameter:g} bytes); {on} gives {gib(usable_per_gpu * tp)} at "
            f"--gpu-memory-utilization {config.gpu_memory_utilization:g}, {gib(ACTIVATION_RESERVE_BYTES * tp)} "
            "of it for activations: the model cannot load; use more GPUs per replica, a larger GPU or a "
            "quantized model"
        )
    elif full_sequences < 1:
        verdict = Verdict.CONTEXT_DOES_NOT_FIT
        message = (
            f"one sequence of --max-model-len {max_model_len:,} tokens needs "
            f"{gib(max_model_len * per_token_per_gpu * tp)} of KV cache; {gib(kv_per_gpu * tp)} is left "
            f"after weights on {on}: vLLM refuses to start; at most {capacity_tokens:,} tokens fit "
            f"(set --max-model-len at most {capacity_tokens:,})"
        )
    else:
        needed = config.max_num_seqs * max_model_len * per_token_per_gpu * tp
        head = (
            f"KV for {config.max_num_seqs:,} sequences {TIMES} {max_model_len:,} tokens needs {gib(needed)}; "
            f"{gib(kv_per_gpu * tp)} is left after weights on {on}"
        )
        if full_sequences < config.max_num_seqs:
            verdict = Verdict.BATCH_DOES_NOT_FIT
            message = (
                f"{head}: at most {full_sequences:,} full sequences (longer batches are preempted; "
                f"lower --max-num-seqs or --max-model-len, or add GPUs)"
            )
        else:
            verdict = Verdict.FITS
            message = f"{head}: {full_sequences:,} full sequences fit"
    return FitResult(verdict=verdict, message=message, **values)  # type: ignore[arg-type]
