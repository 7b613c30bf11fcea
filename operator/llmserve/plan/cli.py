"""`llmserve plan fit | capacity | rent-vs-buy`: the planner's questions as commands (table, --json, --plot)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmserve.plan.capacity import CapacityPlan, PlanError, Workload, plan_capacity
from llmserve.plan.engineargs import EngineArgError, parse_memory_flags
from llmserve.plan.fit import (
    DEFAULT_MAX_NUM_SEQS,
    FitResult,
    ServingConfig,
    check_fit,
    gib,
    vllm_default_max_num_seqs,
)
from llmserve.plan.load import LoadShape, TraceError, daily_curve, read_azure_trace, shape_from_trace
from llmserve.plan.rentbuy import FleetPolicy, Option, RentBuyPlan, local_price, plan_rent_vs_buy
from llmserve.plan.shapes import GPU_MEMORY, MODEL_SHAPES, find_gpu_memory, find_model_shape

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
H100 = "NVIDIA-H100-80GB-HBM3"


def _serving_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=LLAMA_8B, help=f"Hugging Face repo id from the built-in table (default {LLAMA_8B})"
    )
    parser.add_argument("--gpu", default=H100, help=f"nvidia.com/gpu.product label (default {H100})")
    parser.add_argument(
        "--gpus-per-replica",
        "--tensor-parallel-size",
        dest="tp",
        type=int,
        default=1,
        help="tensor-parallel size",
    )
    parser.add_argument(
        "--max-num-seqs",
        type=int,
        help="vLLM batch slots per replica (default: vLLM's for the GPU: 1024 on >= 70 GiB GPUs other "
        "than A100, else 256)",
    )
    parser.add_argument("--max-model-len", type=int, help="context window (default: the model's)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--kv-cache-dtype", default="auto", help="auto (16-bit) or fp8")
    parser.add_argument("--quantization", help="fp8, awq, gptq, ... (weight bytes per parameter)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the answer (needs matplotlib)")  # fmt: skip


def _config(args: argparse.Namespace) -> ServingConfig:
    engine = ["--kv-cache-dtype", args.kv_cache_dtype] + (
        ["--quantization", args.quantization] if args.quantization else []
    )
    flags = parse_memory_flags(engine)
    if args.max_num_seqs is None:
        gpu = find_gpu_memory(args.gpu)
        args.max_num_seqs = (
            vllm_default_max_num_seqs(args.gpu, gpu.memory_bytes) if gpu else DEFAULT_MAX_NUM_SEQS
        )
    if args.tp < 1 or args.max_num_seqs < 1:
        raise PlanError("--gpus-per-replica and --max-num-seqs must be at least 1")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise PlanError("--gpu-memory-utilization must be in (0, 1]")
    return ServingConfig(
        tensor_parallel_size=args.tp,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        weight_bytes_per_parameter=flags.weight_bytes_per_parameter,
        kv_bytes_per_element=flags.kv_bytes_per_element,
    )


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


# -- fit ----------------------------------------------------------------------------------------------


def fit_json(fit: FitResult) -> dict[str, Any]:
    return {
        "verdict": str(fit.verdict), "model": fit.model, "gpuProduct": fit.gpu_product, "gpus": fit.gpus,
        "weightBytes": fit.weight_bytes, "kvCacheBytes": fit.kv_cache_bytes, "kvBytesPerToken": fit.kv_bytes_per_token,
        "kvBytesNeeded": fit.kv_bytes_needed, "maxModelLen": fit.max_model_len, "maxNumSeqs": fit.max_num_seqs,
        "kvCapacityTokens": fit.kv_capacity_tokens, "fullSequences": fit.full_sequences, "message": fit.message,
    }  # fmt: skip


def fit_rows(fit: FitResult) -> list[tuple[str, str]]:
    return [
        ("weights", f"{gib(fit.weight_bytes)} over {fit.gpus} GPU(s)"),
        ("usable memory", f"{gib(fit.usable_bytes)} (minus {gib(fit.reserve_bytes)} activation reserve)"),
        ("KV cache", f"{gib(fit.kv_cache_bytes)} = {fit.kv_capacity_tokens:,} tokens"),
        ("KV per token", f"{fit.kv_bytes_per_token / 1024:,.0f} KiB"),
        (
            "full sequences",
            f"{fit.full_sequences:,} of {fit.max_model_len:,} tokens (batch: {fit.max_num_seqs:,})",
        ),
        ("verdict", f"{fit.verdict}: {fit.message}"),
    ]


def run_fit(args: argparse.Namespace) -> int:
    model = find_model_shape(args.model)
    gpu = find_gpu_memory(args.gpu)
    if model is None:
        raise PlanError(f"--model {args.model!r} is not in the built-in table; known: {', '.join(s.name for s in MODEL_SHAPES.values())}")  # fmt: skip
    if gpu is None:
        raise PlanError(f"--gpu {args.gpu!r} is not in the built-in table; known: {', '.join(GPU_MEMORY)}")
    fit = check_fit(model, gpu.product, gpu.memory_bytes, _config(args))
    print(json.dumps(fit_json(fit), indent=2) if args.json else _table(fit_rows(fit)))
    return 0 if fit.fits else 3


# -- capacity -----------------------------------------------------------------------------------------


def capacity_json(plan: CapacityPlan) -> dict[str, Any]:
    at = plan.at_capacity
    return {
        "model": plan.model, "gpuProduct": plan.gpu_product, "gpusPerReplica": plan.gpus_per_replica,
        "users": plan.users, "promptTokens": plan.workload.prompt_tokens, "outputTokens": plan.workload.output_tokens,
        "sloTtftSeconds": plan.workload.slo_ttft_seconds, "sloItlSeconds": plan.workload.slo_itl_seconds,
        "concurrencyPerReplica": plan.concurrency_per_replica, "bindingLimit": str(plan.binding_limit),
        "limits": {"batchSlots": plan.batch_slots, "kvMemory": plan.kv_limited_concurrency,
                   "slo": plan.slo_limited_concurrency},
        "atCapacity": {"ttftSeconds": at.time_to_first_token_seconds, "itlSeconds": at.inter_token_seconds,
                       "outputTokensPerSecond": at.output_tokens_per_second,
                       "requestsPerSecond": plan.requests_per_second_per_replica},
        "replicas": plan.replicas, "gpus": plan.gpus,
        "memory": {"weightBytes": plan.fit.weight_bytes, "kvBytesPerUser": plan.kv_bytes_per_user,
                   "kvBytesAtCapacity": plan.kv_bytes_at_capacity, "kvCacheBytes": plan.fit.kv_cache_bytes},
        "fit": fit_json(plan.fit),
    }  # fmt: skip


def capacity_rows(plan: CapacityPlan) -> list[tuple[str, str]]:
    at = plan.at_capacity
    limits = f"batch slots {plan.batch_slots}, KV memory {plan.kv_limited_concurrency}"
    return [
        ("question", f"{plan.users:,} users of {plan.workload.prompt_tokens:,} + {plan.workload.output_tokens:,} tokens, "
                     f"TTFT <= {plan.workload.slo_ttft_seconds:g} s, ITL <= {1000 * plan.workload.slo_itl_seconds:g} ms"),
        ("replica", f"{plan.model} on {plan.gpus_per_replica}x {plan.gpu_product}"),
        ("users per replica", f"{plan.concurrency_per_replica} (binding limit: {plan.binding_limit}; {limits})"),
        ("at that load", f"TTFT {at.time_to_first_token_seconds:.3f} s, ITL {1000 * at.inter_token_seconds:.1f} ms, "
                         f"{at.output_tokens_per_second:,.0f} output tok/s, {plan.requests_per_second_per_replica:.2f} req/s"),
        ("replicas needed", f"{plan.replicas} ({plan.gpus} GPUs)"),
        ("weights", f"{gib(plan.fit.weight_bytes)} per replica"),
        ("KV per user", f"{gib(plan.kv_bytes_per_user)} ({plan.workload.prompt_tokens + plan.workload.output_tokens:,} tokens)"),
        ("KV at capacity", f"{gib(plan.kv_bytes_at_capacity)} of {gib(plan.fit.kv_cache_bytes)} KV cache per replica"),
        ("fit at max-model-len", f"{plan.fit.verdict}: {plan.fit.message}"),
    ]  # fmt: skip


def run_capacity(args: argparse.Namespace) -> int:
    workload = Workload(args.prompt_tokens, args.output_tokens, args.slo_ttft_seconds, args.slo_itl_seconds)
    plan = plan_capacity(
        args.model, args.gpu, args.users, workload, _config(args), args.max_num_batched_tokens
    )
    print(json.dumps(capacity_json(plan), indent=2) if args.json else _table(capacity_rows(plan)))
    if args.plot:
        from llmserve.plan.plot import plot_capacity

        plot_capacity(plan, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# -- rent vs buy --------------------------------------------------------------------------------------


def _option_json(option: Option) -> dict[str, Any]:
    return {"name": option.name, "ownedGpus": option.owned_gpus, "ownedGpuHours": option.owned_gpu_hours,
            "rentedGpuHours": option.rented_gpu_hours, "usdPerMonth": option.usd_per_month,
            "utilization": option.utilization}  # fmt: skip


def rent_buy_json(plan: RentBuyPlan) -> dict[str, Any]:
    return {
        "load": {"source": plan.shape.source, "binSeconds": plan.shape.bin_seconds,
                 "durationSeconds": plan.shape.duration_seconds, "peakRequestsPerSecond": max(plan.shape.requests_per_second),
                 "meanRequestsPerSecond": sum(plan.shape.requests_per_second) / len(plan.shape.requests_per_second),
                 "meanPromptTokens": plan.shape.mean_prompt_tokens, "meanOutputTokens": plan.shape.mean_output_tokens,
                 "repeatsPerMonth": plan.shape_repeats_per_month},
        "requestsPerSecondPerReplica": plan.requests_per_second_per_replica, "gpusPerReplica": plan.gpus_per_replica,
        "localUsdPerGpuHour": plan.local.usd_per_gpu_hour, "localPriceBasis": plan.local.basis,
        "rentUsdPerGpuHour": plan.rent_usd_per_gpu_hour, "breakEvenUtilization": plan.break_even_utilization,
        "options": [_option_json(o) for o in (plan.buy_for_peak, plan.buy_baseline_rent_spikes, plan.rent_all)],
        "cheapest": plan.cheapest.name,
    }  # fmt: skip


def rent_buy_text(plan: RentBuyPlan) -> str:
    shape = plan.shape
    head = _table([
        ("load", f"{shape.source}: peak {max(shape.requests_per_second):.1f} req/s, mean "
                 f"{sum(shape.requests_per_second) / len(shape.requests_per_second):.1f} req/s over "
                 f"{shape.duration_seconds / 3600:.2f} h, repeated {plan.shape_repeats_per_month:,.1f}x a month"),
        ("one replica", f"{plan.requests_per_second_per_replica:.2f} req/s within the SLO on {plan.gpus_per_replica} GPU(s)"),
        ("local price", f"${plan.local.usd_per_gpu_hour:.3f}/GPU-hour ({plan.local.basis})"),
        ("rented price", f"${plan.rent_usd_per_gpu_hour:.3f}/GPU-hour"),
        ("break-even", f"owning a GPU pays off when it is busy more than {100 * plan.break_even_utilization:.0f}% of the hours"),
    ])  # fmt: skip
    header = f"{'option':<36} {'owned GPUs':>10} {'rented GPU-h':>13} {'utilization':>11} {'USD / month':>14}"
    lines = [head, "", header, "-" * len(header)]
    for option in (plan.buy_for_peak, plan.buy_baseline_rent_spikes, plan.rent_all):
        mark = "  <- cheapest" if option is plan.cheapest else ""
        lines.append(f"{option.name:<36} {option.owned_gpus:>10} {option.rented_gpu_hours:>13,.0f} "
                     f"{100 * option.utilization:>10.0f}% {option.usd_per_month:>14,.0f}{mark}")  # fmt: skip
    return "\n".join(lines)


def _load_shape(args: argparse.Namespace) -> LoadShape:
    if args.trace:
        return shape_from_trace(read_azure_trace(args.trace), args.bin_seconds or 10.0, str(args.trace))
    if args.peak_rps is None:
        raise PlanError(
            "give a load: --trace FILE (Azure CSV) or --peak-rps (with --trough-rps, --peak-hour)"
        )
    return daily_curve(args.peak_rps, args.trough_rps, args.prompt_tokens, args.output_tokens, args.peak_hour,
                       args.bin_seconds or 300.0)  # fmt: skip


def run_rent_vs_buy(args: argparse.Namespace) -> int:
    shape = _load_shape(args)
    per_replica = args.requests_per_second_per_replica
    if per_replica is None:
        workload = Workload(
            shape.mean_prompt_tokens, shape.mean_output_tokens, args.slo_ttft_seconds, args.slo_itl_seconds
        )
        per_replica = plan_capacity(
            args.model, args.gpu, 1, workload, _config(args)
        ).requests_per_second_per_replica
    price = local_price(args.local_usd_per_gpu_hour, args.gpu_purchase_usd, args.amortization_months,
                        args.power_watts, args.usd_per_kwh, args.pue)  # fmt: skip
    policy = FleetPolicy(
        args.target_utilization,
        args.scale_down_delay_seconds,
        args.cold_start_seconds,
        args.min_replicas,
        slo=args.autoscaling_slo,
    )
    plan = plan_rent_vs_buy(shape, per_replica, args.tp, price, args.rent_usd_per_gpu_hour, policy)
    print(json.dumps(rent_buy_json(plan), indent=2) if args.json else rent_buy_text(plan))
    if args.plot:
        from llmserve.plan.plot import plot_rent_vs_buy

        plot_rent_vs_buy(plan, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# -- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmserve plan", description=__doc__)
    sub = parser.add_subparsers(dest="question", required=True)

    fit = sub.add_parser("fit", help="do the weights load and how many full-context sequences fit")
    _serving_arguments(fit)

    capacity = sub.add_parser("capacity", help="replicas and GPUs for N users within a TTFT/ITL SLO")
    _serving_arguments(capacity)
    capacity.add_argument(
        "--users", type=int, required=True, help="concurrent users (requests in flight) at peak"
    )
    capacity.add_argument("--prompt-tokens", type=int, default=1000)
    capacity.add_argument("--output-tokens", type=int, default=200)
    capacity.add_argument("--slo-ttft-seconds", type=float, default=1.0, help="mean time to first token")
    capacity.add_argument("--slo-itl-seconds", type=float, default=0.05, help="mean inter-token latency")
    capacity.add_argument(
        "--max-num-batched-tokens", type=int, help="per-step token budget (default: vLLM's for the GPU)"
    )

    rent = sub.add_parser(
        "rent-vs-buy", help="monthly cost of owning for the peak, owning the baseline, or renting"
    )
    _serving_arguments(rent)
    load = rent.add_argument_group("load (a trace, or a daily curve)")
    load.add_argument(
        "--trace", type=Path, help="Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens)"
    )
    load.add_argument("--peak-rps", type=float, help="daily curve: requests/s at the daily peak")
    load.add_argument("--trough-rps", type=float, default=0.0, help="daily curve: requests/s at the trough")
    load.add_argument("--peak-hour", type=float, default=14.0, help="daily curve: hour of the peak (0-24)")
    load.add_argument("--prompt-tokens", type=int, default=1000, help="daily curve: mean prompt length")
    load.add_argument("--output-tokens", type=int, default=200, help="daily curve: mean output length")
    load.add_argument(
        "--bin-seconds", type=float, help="load resolution (default 10 for a trace, 300 for a curve)"
    )
    slo = rent.add_argument_group("what one replica serves")
    slo.add_argument("--slo-ttft-seconds", type=float, default=1.0)
    slo.add_argument("--slo-itl-seconds", type=float, default=0.05)
    slo.add_argument(
        "--requests-per-second-per-replica", type=float, help="skip the capacity model and use this"
    )
    money = rent.add_argument_group("prices")
    money.add_argument(
        "--rent-usd-per-gpu-hour", type=float, required=True, help="cloud price of one GPU-hour"
    )
    money.add_argument("--local-usd-per-gpu-hour", type=float, help="all-in cost of an owned GPU-hour")
    money.add_argument(
        "--gpu-purchase-usd", type=float, help="or: purchase price of one GPU (with its share of the server)"
    )
    money.add_argument("--amortization-months", type=float, default=36)
    money.add_argument(
        "--power-watts", type=float, default=700, help="per GPU, including its share of the server"
    )
    money.add_argument("--usd-per-kwh", type=float, default=0.12)
    money.add_argument("--pue", type=float, default=1.3, help="data-centre power usage effectiveness")
    fleet = rent.add_argument_group("how rented replicas follow the load (llmserve's defaults)")
    fleet.add_argument("--target-utilization", type=float, default=0.8)
    fleet.add_argument("--scale-down-delay-seconds", type=float, default=300)
    fleet.add_argument("--cold-start-seconds", type=float, default=60)
    fleet.add_argument("--min-replicas", type=int, default=1)
    fleet.add_argument(
        "--autoscaling-slo",
        action="store_true",
        help="the LLMServe sets autoscaling.slo: replicas are held one cold start (at least 120 s, at most "
        "the scale-down delay) instead of the whole delay",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.question == "fit":
            return run_fit(args)
        if args.question == "capacity":
            return run_capacity(args)
        return run_rent_vs_buy(args)
    except (PlanError, TraceError, EngineArgError) as err:
        print(f"llmserve plan {args.question}: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `llmserve plan ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ImportError as err:
        print(
            f"llmserve plan {args.question}: --plot needs matplotlib ({err}); pip install 'llmserve[plot]'",
            file=sys.stderr,
        )
        return 2
