"""Capacity: how many users one replica serves within a TTFT/ITL SLO, and how many replicas a load needs.

The prediction is closed-form over the simulator's own step formula (`Profile.step_seconds`): in a
closed loop of C users, every step runs C sequences; a request lives ceil(P/B) prefill chunks + O - 1
decode steps, so a fraction C x chunks / lifetime of steps also carries a prefill chunk. ITL is the
mean step, TTFT the prefill chunks' steps. Tests check it against a closed-loop run of the batching
model (`sim.virtual.run_closed_loop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from llmserve.plan.fit import FitResult, ServingConfig, check_fit
from llmserve.plan.shapes import MODEL_SHAPES, find_model_shape
from llmserve.sim.profiles import GPUS, Profile


class PlanError(ValueError):
    """The question cannot be answered as asked; the message says which input and what would work."""


class BindingLimit(StrEnum):
    KV_MEMORY = "kv-memory"
    BATCH_SLOTS = "batch-slots"
    COMPUTE = "compute"  # the SLO binds: a bigger batch makes every step too slow


@dataclass(frozen=True)
class Workload:
    """One request shape and the latency each must meet."""

    prompt_tokens: int
    output_tokens: int
    slo_ttft_seconds: float
    slo_itl_seconds: float

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise PlanError("--prompt-tokens and --output-tokens must be at least 1")
        if self.slo_ttft_seconds <= 0 or self.slo_itl_seconds <= 0:
            raise PlanError("--slo-ttft-seconds and --slo-itl-seconds must be positive")


@dataclass(frozen=True)
class Prediction:
    concurrency: int
    time_to_first_token_seconds: float
    inter_token_seconds: float
    output_tokens_per_second: float


def predict(
    profile: Profile, max_num_batched_tokens: int, workload: Workload, concurrency: int
) -> Prediction:
    """Steady-state mean TTFT, mean ITL and throughput of `concurrency` closed-loop users on one replica."""
    prompt, output, users = workload.prompt_tokens, workload.output_tokens, concurrency
    chunks = math.ceil(prompt / max_num_batched_tokens)
    lifetime_steps = chunks + output - 1
    context = users * (prompt + output / 2)
    prefill_fraction = users * chunks / lifetime_steps
    if prefill_fraction <= 1:
        plain = profile.step_seconds(users, round(context), 0, users)
        chunk = prompt / chunks
        with_prefill = profile.step_seconds(users, round(context), round(chunk), users - 1)
        mean_step = (1 - prefill_fraction) * plain + prefill_fraction * with_prefill
        ttft = chunks * with_prefill
    else:  # several prefills share every step
        prefill_tokens = users * prompt / lifetime_steps
        decode_tokens = users * (output - 1) / lifetime_steps
        mean_step = profile.step_seconds(users, round(context), round(prefill_tokens), round(decode_tokens))
        ttft = chunks * mean_step * prefill_fraction
    throughput = users * output / (lifetime_steps * mean_step)
    return Prediction(users, ttft, mean_step, throughput)


@dataclass(frozen=True)
class CapacityPlan:
    """The answer to "how many replicas for N users of this shape within this SLO"."""

    model: str
    gpu_product: str
    gpus_per_replica: int
    users: int
    workload: Workload
    concurrency_per_replica: int
    binding_limit: BindingLimit
    at_capacity: Prediction
    batch_slots: int
    kv_limited_concurrency: int
    slo_limited_concurrency: int
    replicas: int
    gpus: int
    fit: FitResult

    @property
    def requests_per_second_per_replica(self) -> float:
        return self.at_capacity.output_tokens_per_second / self.workload.output_tokens

    @property
    def kv_bytes_per_user(self) -> float:
        return (self.workload.prompt_tokens + self.workload.output_tokens) * self.fit.kv_bytes_per_token

    @property
    def kv_bytes_at_capacity(self) -> float:
        return self.kv_bytes_per_user * self.concurrency_per_replica


def profile_for(model_name: str, gpu_product: str, config: ServingConfig) -> Profile:
    """The simulator's timing profile for a table model on a GPU it has datasheet numbers for."""
    model = find_model_shape(model_name)
    if model is None:
        raise PlanError(f"--model {model_name!r} is not in the built-in table; known: {', '.join(s.name for s in MODEL_SHAPES.values())}")  # fmt: skip
    if gpu_product not in GPUS:
        raise PlanError(f"--gpu {gpu_product!r} has no timing profile; known: {', '.join(GPUS)}")
    return Profile(
        gpu=GPUS[gpu_product],
        model=model,
        tensor_parallel_size=config.tensor_parallel_size,
        weight_bytes_per_parameter=config.weight_bytes_per_parameter,
        kv_cache_bytes_per_element=config.kv_bytes_per_element,
        gpu_memory_utilization=config.gpu_memory_utilization,
    )


def plan_capacity(
    model_name: str,
    gpu_product: str,
    users: int,
    workload: Workload,
    config: ServingConfig,
    max_num_batched_tokens: int | None = None,
    block_size: int = 16,
) -> CapacityPlan:
    """Largest per-replica concurrency that meets the SLO, bounded by batch slots and KV memory."""
    if users < 1:
        raise PlanError("--users must be at least 1")
    profile = profile_for(model_name, gpu_product, config)
    fit = check_fit(profile.model, gpu_product, profile.gpu.memory_bytes, config)
    if fit.kv_capacity_tokens <= 0:
        raise PlanError(f"{model_name} does not load on {gpu_product}: {fit.message}")
    budget = max_num_batched_tokens or profile.gpu.default_max_num_batched_tokens
    request_blocks = math.ceil((workload.prompt_tokens + workload.output_tokens) / block_size)
    kv_limited = fit.kv_capacity_tokens // block_size // request_blocks
    if kv_limited < 1:
        raise PlanError(f"one request of {workload.prompt_tokens + workload.output_tokens:,} tokens does "
                        f"not fit the KV cache of {fit.kv_capacity_tokens:,} tokens")  # fmt: skip
    ceiling = min(config.max_num_seqs, kv_limited)

    def within_slo(users_per_replica: int) -> bool:
        p = predict(profile, budget, workload, users_per_replica)
        return (
            p.time_to_first_token_seconds <= workload.slo_ttft_seconds
            and p.inter_token_seconds <= workload.slo_itl_seconds
        )

    if not within_slo(1):
        single = predict(profile, budget, workload, 1)
        raise PlanError(
            f"even one user misses the SLO on {gpu_product}: TTFT {single.time_to_first_token_seconds:.3f}s, "
            f"ITL {1000 * single.inter_token_seconds:.1f}ms; relax the SLO, add GPUs per replica or "
            "choose a faster GPU"
        )
    low, high = 1, ceiling  # within_slo(low) holds; find the largest that does (latency grows with C)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if within_slo(middle) else (low, middle - 1)
    slo_limited = low if low < ceiling else ceiling
    if slo_limited < ceiling:
        binding = BindingLimit.COMPUTE
    elif kv_limited < config.max_num_seqs:
        binding = BindingLimit.KV_MEMORY
    else:
        binding = BindingLimit.BATCH_SLOTS
    replicas = math.ceil(users / slo_limited)
    return CapacityPlan(
        model=profile.model.name,
        gpu_product=gpu_product,
        gpus_per_replica=profile.tensor_parallel_size,
        users=users,
        workload=workload,
        concurrency_per_replica=slo_limited,
        binding_limit=binding,
        at_capacity=predict(profile, budget, workload, slo_limited),
        batch_slots=config.max_num_seqs,
        kv_limited_concurrency=kv_limited,
        slo_limited_concurrency=slo_limited,
        replicas=replicas,
        gpus=replicas * profile.tensor_parallel_size,
        fit=fit,
    )
