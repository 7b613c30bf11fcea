"""Fleet simulator: replays an LLM request trace against autoscaling policies, side by side, on the batching model.

Every replica is the simulator's own continuous-batching timing model (llmserve.sim.batching.Engine); the
llmserve policy is the operator's own code (llmserve.autoscale.policy.decide). New replicas hold their GPUs
through a cold start before serving; replicas that are removed stop taking requests, finish what they
hold, then free their GPUs. A router sends each request to the least-loaded ready replica and holds
requests while none is ready (as the gateway does).

    python bench/autoscaling.py                                  # seeded bursty trace, every policy
    python bench/autoscaling.py --trace bench/traces/azure-conv-sample.csv --duration-minutes 0
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from autoscaling_fleet import Fleet, Result
from autoscaling_policies import HpaLike, KedaLike, KubeAiLike, Llmserve, Static
from autoscaling_traces import Request, generate_trace, load_azure_trace, write_azure_trace
from llmserve.api.llmserve import AutoscalingSpec, LLMServeSpec
from llmserve.autoscale.demand import DemandModel, ReplicaModel, SloTargets
from llmserve.controller.autoscaling import policy_config
from llmserve.sim.batching import EngineConfig, FinishedRequest
from llmserve.sim.profiles import resolve_profile
from llmserve.sim.virtual import run_closed_loop


def busiest_minute_replicas(args: argparse.Namespace, trace: list[Request]) -> int:
    """Capacity planning at the peak: the busiest minute's arrival rate over one replica's measured rate."""
    profile = resolve_profile(args.gpu, args.model, tensor_parallel_size=args.gpus_per_replica)
    prompt = round(statistics.fmean(r.prompt_tokens for r in trace))
    output = round(statistics.fmean(r.output_tokens for r in trace))
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len)
    per_replica = (
        run_closed_loop(profile, config, args.max_num_seqs, prompt, output).output_tokens_per_second / output
    )
    per_minute: dict[int, int] = {}
    for r in trace:
        per_minute[int(r.arrival // 60)] = per_minute.get(int(r.arrival // 60), 0) + 1
    peak_rps = max(per_minute.values()) / 60
    return min(args.gpus // args.gpus_per_replica, math.ceil(peak_rps / per_replica))


def static_peak(args: argparse.Namespace, trace: list[Request]) -> Result:
    """Static provisioning at the peak: the fewest fixed replicas that meet the SLO goal on this trace
    (searched upwards from the busiest-minute estimate), or the whole GPU cap if none does."""
    replicas = busiest_minute_replicas(args, trace)
    while True:
        result = Fleet(args, Static(replicas)).run(trace, replicas)
        good = sum(1 for a, f in result.finished if meets_slo(a, f, args))
        if good >= args.slo_goal * len(result.finished) or replicas >= args.gpus // args.gpus_per_replica:
            return result
        replicas += 1


def meets_slo(arrival: float, done: FinishedRequest, args: argparse.Namespace) -> bool:
    ttft = done.first_token_time - arrival
    return ttft <= args.slo_ttft_seconds and done.mean_inter_token_seconds <= args.slo_itl_seconds


def summarize(result: Result, args: argparse.Namespace, static_gpu_hours: float) -> list[str]:
    good = [f for a, f in result.finished if meets_slo(a, f, args)]
    ttfts = sorted(f.first_token_time - a for a, f in result.finished)
    gpu_hours = result.gpu_seconds / 3600
    p99 = ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))] if ttfts else float("nan")
    return [
        result.name,
        f"{100 * len(good) / max(1, len(result.finished)):.2f}%",
        f"{statistics.median(ttfts):.2f} / {p99:.2f}",
        f"{gpu_hours:.1f}",
        f"{100 * gpu_hours / static_gpu_hours:.0f}%",
        f"{len(good) / gpu_hours:,.0f}",
        str(result.rescales),
        str(result.peak_replicas),
    ]


def demand_model(args: argparse.Namespace) -> DemandModel:
    """What the operator builds for an LLMServe with autoscaling.slo set: the profile-seeded replica model."""
    profile = resolve_profile(args.gpu, args.model, tensor_parallel_size=args.gpus_per_replica)
    slo = SloTargets(args.slo_ttft_seconds, args.slo_itl_seconds, 0.9)
    return DemandModel(ReplicaModel.from_profile(profile, args.max_num_seqs), slo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trace", type=Path, help="Azure-format CSV (TIMESTAMP,ContextTokens,GeneratedTokens)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated trace")
    parser.add_argument(
        "--duration-minutes", type=float, default=30, help="generated trace length (0 = whole file)"
    )
    parser.add_argument(
        "--peak-rps", type=float, default=40, help="generated trace: requests/s at the top spike"
    )
    parser.add_argument("--write-trace", type=Path, help="write the generated trace as Azure CSV and exit")
    parser.add_argument("--model", default="meta-llama/Llama-3.1-70B-Instruct")
    parser.add_argument("--gpu", default="NVIDIA-H100-80GB-HBM3")
    parser.add_argument("--gpus-per-replica", type=int, default=4, help="tensor-parallel size")
    parser.add_argument("--gpus", type=int, default=64, help="GPU cap of the cluster")
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--cold-start-seconds", type=float, default=60)
    parser.add_argument("--slo-ttft-seconds", type=float, default=1.0)
    parser.add_argument("--slo-itl-seconds", type=float, default=0.05)
    parser.add_argument(
        "--slo-goal", type=float, default=0.99, help="attainment the static fleet is sized for"
    )
    parser.add_argument(
        "--scale-down-delay-seconds", type=int, default=AutoscalingSpec().scale_down_delay_seconds
    )
    parser.add_argument(
        "--batch-slots-target",
        type=float,
        default=AutoscalingSpec().effective_batch_slots_target,
        help="llmserve: share of the batch slots a replica fills at target; the rest is standing headroom",
    )
    parser.add_argument(
        "--policies", default="llmserve,hpa,keda,kubeai,static", help="comma-separated subset"
    )
    args = parser.parse_args(argv)

    if args.trace:
        trace = load_azure_trace(args.trace, args.max_model_len)
        if args.duration_minutes:
            trace = [r for r in trace if r.arrival < args.duration_minutes * 60]
    else:
        trace = generate_trace(args.seed, args.duration_minutes * 60, args.peak_rps, args.max_model_len)
    if args.write_trace:
        write_azure_trace(args.write_trace, trace)
        print(f"wrote {len(trace)} requests to {args.write_trace}")
        return 0

    max_replicas = args.gpus // args.gpus_per_replica
    # The operator's own spec -> policy mapping, so the benchmark runs exactly what a user would get.
    spec = LLMServeSpec.model_validate({
        "model": {"name": args.model},
        "engine": {"kind": "simulator", "args": [f"--max-num-seqs={args.max_num_seqs}"]},
        "minReplicas": 1,
        "maxReplicas": max_replicas,
        "autoscaling": {
            "scaleDownDelaySeconds": args.scale_down_delay_seconds,
            "batchSlotsTarget": args.batch_slots_target,
        },
    })  # fmt: skip
    ours = policy_config(spec)
    candidates = {
        "llmserve": lambda: Llmserve(
            ours, spec.autoscaling.interval_seconds, demand_model(args), args.cold_start_seconds
        ),
        "hpa": lambda: HpaLike(0.75 * args.max_num_seqs, max_replicas),
        "keda": lambda: KedaLike(max_replicas),
        "kubeai": lambda: KubeAiLike(args.max_num_seqs, max_replicas),
        "static": lambda: Static(0),
    }
    chosen = [candidates[name.strip()]() for name in args.policies.split(",")]
    print(f"trace: {len(trace)} requests over {trace[-1].arrival / 60:.1f} min; model {args.model} on "
          f"{args.gpus_per_replica}x {args.gpu} per replica, max_num_seqs {args.max_num_seqs}, "
          f"cold start {args.cold_start_seconds:g}s, GPU cap {args.gpus}; SLO: TTFT <= {args.slo_ttft_seconds:g}s "
          f"and mean ITL <= {1000 * args.slo_itl_seconds:g}ms")  # fmt: skip
    results = []
    for policy in chosen:
        started = time.perf_counter()
        results.append(
            static_peak(args, trace) if isinstance(policy, Static) else Fleet(args, policy).run(trace, 1)
        )
        print(f"  simulated {results[-1].name} in {time.perf_counter() - started:.0f}s", flush=True)
    statics = [r.gpu_seconds for r in results if r.name.startswith("static")]
    static_hours = statics[0] / 3600 if statics else float("nan")
    header = ["policy", "SLO attainment", "TTFT p50 / p99 (s)", "GPU-hours", "vs static", "goodput / GPU-hour", "rescales", "peak replicas"]  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for result in results:
        print("| " + " | ".join(summarize(result, args, static_hours)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
