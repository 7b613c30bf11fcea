"""Fleet simulator: replays an LLM request trace against autoscaling policies, side by side, on the batching model.

Every replica is the simulator's own continuous-batching timing model (llmserve.sim.batching.Engine); the
llmserve policy is the operator's own code (llmserve.autoscale.policy.decide). New replicas hold their GPUs
through a cold start before serving; replicas that are removed stop taking requests, finish what they
hold, then free their GPUs. The gateway's own router (llmserve.gateway.routing, slot-aware least load;
`--router ideal` for plain fewest-requests) sends each request to a ready replica, and requests are held
while none is ready (as the gateway does). A clairvoyant oracle and the fluid lower bound
(bench/autoscaling_oracle.py) are the yardsticks.

    python bench/autoscaling.py                                  # seeded bursty trace, every policy
    python bench/autoscaling.py --trace bench/traces/azure-conv-sample.csv   # a whole Azure-format file
    python bench/autoscaling.py --suite                          # the trace suite, cold starts 60/180/300 s
    python bench/autoscaling.py --quick                          # shortened suite, one cold start (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The benchmark's modules sit beside it; this lets both `python bench/autoscaling.py` and
# `from bench import autoscaling` (tests, bench/burst.py) find them.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoscaling_breakdown import breakdown
from autoscaling_fleet import ROUTERS, Fleet, Result
from autoscaling_oracle import BUCKET_SECONDS, Need, Oracle, fluid_gpu_hours, jump_windows, need, unavoidable
from autoscaling_policies import HpaLike, KedaLike, KubeAiLike, Llmserve, Static
from autoscaling_traces import Request, generate_trace, load_azure_trace, suite, write_azure_trace
from llmserve.api.llmserve import AutoscalingSpec, LLMServeSpec
from llmserve.autoscale.demand import DemandModel
from llmserve.autoscale.replica_model import ReplicaModel, SloTargets
from llmserve.autoscale.spec import policy_config
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


def static_peak(args: argparse.Namespace, trace: list[Request], start: int | None = None) -> Result:
    """Static provisioning at the peak: the fewest fixed replicas that meet the SLO goal on this trace
    (searched upwards from the busiest-minute estimate), or the whole GPU cap if none does."""
    replicas = start or busiest_minute_replicas(args, trace)
    while True:
        result = Fleet(args, Static(replicas)).run(trace, replicas)
        good = sum(1 for a, f in result.finished if meets_slo(a, f, args))
        if (
            good >= args.slo_goal * (len(result.finished) + len(result.rejected))
            or replicas >= args.gpus // args.gpus_per_replica
        ):
            return result
        replicas += 1


def meets_slo(arrival: float, done: FinishedRequest, args: argparse.Namespace) -> bool:
    ttft = done.first_token_time - arrival
    return ttft <= args.slo_ttft_seconds and done.mean_inter_token_seconds <= args.slo_itl_seconds


def demand_model(args: argparse.Namespace) -> DemandModel:
    """What the operator builds for an LLMServe with autoscaling.slo set: the profile-seeded replica model."""
    profile = resolve_profile(args.gpu, args.model, tensor_parallel_size=args.gpus_per_replica)
    slo = SloTargets(args.slo_ttft_seconds, args.slo_itl_seconds, 0.9)
    return DemandModel(ReplicaModel.from_profile(profile, args.max_num_seqs), slo)


def attainment(result: Result, args: argparse.Namespace) -> float:
    good = sum(1 for a, f in result.finished if meets_slo(a, f, args))
    return good / max(1, len(result.finished) + len(result.rejected))


@dataclass
class Row:
    name: str
    attainment: float
    ttft_misses: float  # share of requests
    itl_misses: float  # share of requests whose TTFT was fine but mean ITL was not
    avoidable_misses: float
    gpu_hours: float
    gpu_hours_per_1k_good: float
    capped_seconds: float
    peak_replicas: int


def row(result: Result, args: argparse.Namespace, windows: list[tuple[float, float]]) -> Row:
    n = max(1, len(result.finished) + len(result.rejected))
    ttft_miss = itl_miss = avoidable = good = 0
    for arrival in result.rejected:  # a 503 from the gateway queue: no first token at all
        ttft_miss += 1
        avoidable += not unavoidable(arrival, windows)
    for arrival, done in result.finished:
        ttft_ok = done.first_token_time - arrival <= args.slo_ttft_seconds
        itl_ok = done.mean_inter_token_seconds <= args.slo_itl_seconds
        if ttft_ok and itl_ok:
            good += 1
            continue
        ttft_miss += not ttft_ok
        itl_miss += ttft_ok and not itl_ok
        avoidable += not unavoidable(arrival, windows)
    hours = result.gpu_seconds / 3600
    return Row(result.name, good / n, ttft_miss / n, itl_miss / n, avoidable / n, hours,
               1000 * hours / max(1, good), result.capped_seconds, result.peak_replicas)  # fmt: skip


HEADER = ["policy", "SLO attainment", "misses TTFT / ITL", "avoidable misses", "GPU-hours", "vs oracle",
          "GPU-h per 1k SLO-met", "peak replicas"]  # fmt: skip


def render(r: Row, oracle_hours: float, cap_replicas: int) -> str:
    # At the cap either replicas went unscheduled or the policy clamped at maxReplicas (= the cap).
    cap = " (GPU cap hit)" if r.capped_seconds > 0 or r.peak_replicas >= cap_replicas else ""
    return "| " + " | ".join([
        r.name, f"{100 * r.attainment:.2f}%", f"{100 * r.ttft_misses:.2f}% / {100 * r.itl_misses:.2f}%",
        f"{100 * r.avoidable_misses:.2f}%", f"{r.gpu_hours:.1f}", f"{r.gpu_hours / oracle_hours:.2f}x",
        f"{r.gpu_hours_per_1k_good:.2f}", f"{r.peak_replicas}{cap}",
    ]) + " |"  # fmt: skip


def spec_for(args: argparse.Namespace) -> LLMServeSpec:
    """The operator's own spec -> policy mapping, so the benchmark runs exactly what a user would get."""
    return LLMServeSpec.model_validate({
        "model": {"name": args.model},
        "engine": {"kind": "simulator", "args": [f"--max-num-seqs={args.max_num_seqs}"]},
        "resources": {"gpus": args.gpus_per_replica, "gpuProduct": args.gpu},
        "minReplicas": 1,
        "maxReplicas": args.gpus // args.gpus_per_replica,
        "autoscaling": {
            "scaleDownDelaySeconds": args.scale_down_delay_seconds,
            "batchSlotsTarget": args.batch_slots_target,
            "slo": {"timeToFirstTokenSeconds": args.slo_ttft_seconds,
                    "interTokenLatencySeconds": args.slo_itl_seconds, "percentile": 90},
        },
    })  # fmt: skip


def run_all(
    args: argparse.Namespace, trace: list[Request]
) -> tuple[Result, list[Result], Need, list[tuple[float, float]]]:
    """The oracle and every autoscaled policy in args.policies on one trace at args.cold_start_seconds."""
    spec = spec_for(args)
    ours = policy_config(spec)
    max_replicas = args.gpus // args.gpus_per_replica
    model = demand_model(args)
    slo = model.slo
    needed = need(trace, model.base_model, slo, ours.batch_slots_target, args.oracle_safety)
    windows = jump_windows(needed, args.cold_start_seconds)
    candidates = {
        "llmserve": lambda: Llmserve(ours, spec.autoscaling.interval_seconds, demand_model(args),
                                     args.cold_start_seconds),
        "hpa": lambda: HpaLike(0.75 * args.max_num_seqs, max_replicas),
        "keda": lambda: KedaLike(max_replicas, gateway_queue=args.gateway_queue),
        "kubeai": lambda: KubeAiLike(args.max_num_seqs, max_replicas),
    }  # fmt: skip
    # The oracle knows the trace from its start: it asked one cold start before t=0 for what the first cold
    # start needs (a reactive policy cannot, so its misses there count as unavoidable: jump_windows).
    ahead = needed.planned[: int(args.cold_start_seconds // BUCKET_SECONDS) + 2]
    oracle = Fleet(args, Oracle(needed, args.cold_start_seconds, args.oracle_safety)).run(trace, max(ahead))
    results = []
    for name in args.policies.split(","):
        if name.strip() in candidates:
            # Every policy starts from the fleet the trace's first minute needs, as the oracle does.
            results.append(Fleet(args, candidates[name.strip()]()).run(trace, needed.planned[0]))
    return oracle, results, needed, windows


def compare(args: argparse.Namespace, label: str, trace: list[Request], static: Result | None) -> list[str]:
    """Every chosen policy plus the oracle on one trace at args.cold_start_seconds: the table's lines."""
    oracle, results, needed, windows = run_all(args, trace)
    max_replicas = args.gpus // args.gpus_per_replica
    if static is not None:
        results.append(static)
    oracle_hours = oracle.gpu_seconds / 3600
    lines = [f"\n**{label}** ({len(trace):,} requests over {trace[-1].arrival / 60:.0f} min, cold start "
             f"{args.cold_start_seconds:g} s; fluid bound {fluid_gpu_hours(needed, args.gpus_per_replica):.1f} "
             f"GPU-h; unavoidable windows {sum(b - a for a, b in windows) / 60:.1f} min)\n",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]  # fmt: skip
    rows = [row(result, args, windows) for result in [oracle, *results]]
    for r in rows:
        lines.append(render(r, oracle_hours, max_replicas))
    if args.json:
        record_cell(args, label, rows, oracle_hours, max_replicas, static)
    if static is not None:
        met = attainment(static, args) >= args.slo_goal
        lines.append(
            f"\nstatic: {static.name} {'meets' if met else 'does NOT meet'} the {args.slo_goal:.0%} SLO goal."
        )
    # Where the GPU-hours went (bench/autoscaling_breakdown.py), for the oracle and llmserve.
    for result in [oracle, *results]:
        if result.name.startswith(("oracle", "llmserve")):
            split = breakdown(result, needed, args.cold_start_seconds, args.gpus_per_replica)
            lines.append(f"\nGPU-h of {result.name.split(' (')[0]}: {split.describe()}.")
    return lines


def record_cell(
    args: argparse.Namespace,
    label: str,
    rows: list[Row],
    oracle_hours: float,
    cap_replicas: int,
    static: Result | None,
) -> None:
    """One JSON line per cell for bench/autoscaling_summary.py: unrounded figures, so that a goal at its
    bound (1.2985x the oracle's GPU-hours prints as 1.30x) is judged on the number, not on its rounding."""
    record = {
        "trace": label,
        "cold_start_seconds": args.cold_start_seconds,
        "suite_scale": args.suite_scale if args.suite else None,
        "oracle_gpu_hours": oracle_hours,
        "static_meets_goal": None if static is None else attainment(static, args) >= args.slo_goal,
        "policies": {
            r.name.split(" (")[0]: {
                "name": r.name,
                "attainment": r.attainment,
                "avoidable_misses": r.avoidable_misses,
                "ttft_misses": r.ttft_misses,
                "itl_misses": r.itl_misses,
                "gpu_hours": r.gpu_hours,
                "gpu_hours_per_1k_good": r.gpu_hours_per_1k_good,
                "peak_replicas": r.peak_replicas,
                "at_gpu_cap": r.capped_seconds > 0 or r.peak_replicas >= cap_replicas,
            }
            for r in rows
        },
    }
    with args.json.open("a") as out:
        out.write(json.dumps(record) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's settings (tests build theirs here too, so they run what the command line runs)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="Azure-format CSV (TIMESTAMP,ContextTokens,GeneratedTokens), replayed whole",
    )
    parser.add_argument(
        "--suite", action="store_true", help="the seeded trace suite at cold starts 60/180/300 s"
    )
    parser.add_argument(
        "--quick", action="store_true", help="suite with shortened traces and one cold start (CI)"
    )
    parser.add_argument(
        "--suite-scale", type=float, default=0.5, help="suite trace length scale (1 = an hour-long swell)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="suite: run only the traces whose name contains one of these (comma-separated)",
    )
    parser.add_argument(
        "--cold-starts",
        default="",
        help="suite: cold starts in seconds, comma-separated (default 60,180,300)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated traces")
    parser.add_argument("--duration-minutes", type=float, default=30, help="generated trace length")
    parser.add_argument(
        "--peak-rps", type=float, default=40, help="generated trace: requests/s at the top spike"
    )
    parser.add_argument("--write-trace", type=Path, help="write the generated trace as Azure CSV and exit")
    parser.add_argument("--model", default="meta-llama/Llama-3.1-70B-Instruct")
    parser.add_argument("--gpu", default="NVIDIA-H100-80GB-HBM3")
    parser.add_argument("--gpus-per-replica", type=int, default=4, help="tensor-parallel size")
    parser.add_argument(
        "--gpus",
        type=int,
        help="GPU cap of the cluster (default 64; 256 for the suite, so that "
        "capacity does not decide the comparison)",
    )
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--cold-start-seconds", type=float, default=60)
    parser.add_argument("--slo-ttft-seconds", type=float, default=1.0)
    parser.add_argument("--slo-itl-seconds", type=float, default=0.05)
    parser.add_argument(
        "--slo-goal", type=float, default=0.99, help="attainment the static fleet is sized for"
    )
    parser.add_argument(
        "--oracle-safety", type=float, default=1.0, help="oracle: multiplier on the model's need"
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
    parser.add_argument(
        "--router",
        choices=ROUTERS,
        default="gateway",
        help="gateway: the product's router (llmserve.gateway.routing, slot-aware least load); "
        "ideal: fewest requests running + waiting",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also append one JSON line per trace and cold start to this file (bench/autoscaling_summary.py)",
    )
    parser.add_argument(
        "--gateway-queue",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="requests wait in the gateway while every batch is full, as the chart deploys it "
        "(gateway.queueWhenFull); --no-gateway-queue: in the engines' queues (the bench's default before the "
        "fifth session)",
    )
    parser.add_argument(
        "--queue-order",
        choices=("fifo", "late-last"),
        default="late-last",
        help="gateway queue: first come first served, or requests past the TTFT target after the others",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=256,
        help="gateway queue: requests waiting per model before 503 (the gateway's --queue-size; 0: no bound)",
    )
    parser.add_argument(
        "--queue-timeout-seconds",
        type=float,
        default=60.0,
        help="gateway queue: longest wait before 503 (the gateway's --queue-timeout; with a bound)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.gpus is None:
        args.gpus = 256 if args.suite or args.quick else 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    traces: dict[str, list[Request]]
    if args.suite or args.quick:
        scale = 0.2 if args.quick else args.suite_scale
        traces = {
            "bursty (the previous default)": generate_trace(
                args.seed, 1800 * scale * 2, 40, args.max_model_len
            )
        }
        traces["Azure sample (whole file)"] = load_azure_trace(
            Path(__file__).parent / "traces" / "azure-conv-sample.csv", args.max_model_len
        )
        traces.update(suite(args.seed, scale, args.max_model_len))
        # A 70B bf16 replica's start (sources in docs/benchmarks.md, "Cold starts"): ~60 s with the image
        # and weights on the node (30-60 s to load 140 GB from local NVMe, plus engine start); ~180 s with
        # a fresh image pull (30-60 s) and weights from a fast cache; ~300 s downloading the 140 GB at the
        # ~1 GB/s object storage sustains (140 s) on top. Users report ~10 min for vLLM 70B TP4 cold.
        cold_starts = [60.0] if args.quick else [60.0, 180.0, 300.0]
        if args.cold_starts:
            cold_starts = [float(c) for c in args.cold_starts.split(",")]
        if args.only:
            wanted = [w.strip() for w in args.only.split(",") if w.strip()]
            traces = {k: v for k, v in traces.items() if any(w in k for w in wanted)}
    elif args.trace:
        traces = {str(args.trace): load_azure_trace(args.trace, args.max_model_len)}  # the whole file
        cold_starts = [args.cold_start_seconds]
    else:
        traces = {
            f"seed {args.seed}": generate_trace(
                args.seed, args.duration_minutes * 60, args.peak_rps, args.max_model_len
            )
        }
        cold_starts = [args.cold_start_seconds]
    if args.write_trace:
        write_azure_trace(args.write_trace, next(iter(traces.values())))
        print(f"wrote {len(next(iter(traces.values())))} requests to {args.write_trace}")
        return 0
    print(f"model {args.model} on {args.gpus_per_replica}x {args.gpu} per replica, max_num_seqs {args.max_num_seqs}, "
          f"GPU cap {args.gpus}, router {args.router}; SLO: TTFT <= {args.slo_ttft_seconds:g}s and mean ITL <= "
          f"{1000 * args.slo_itl_seconds:g}ms per request")  # fmt: skip
    started = time.process_time()
    for label, trace in traces.items():
        static = None
        if "static" in args.policies:
            static = static_peak(args, trace)
        for cold in cold_starts:
            args.cold_start_seconds = cold
            print("\n".join(compare(args, label, trace, static)), flush=True)
    print(f"\nCPU time: {time.process_time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
