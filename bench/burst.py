"""Fleet simulation with a local GPU cap and rented capacity: local-only vs local + burst vs all-rented.

The fleet of bench/autoscaling_fleet.py (batching-model replicas; the operator's default policy with its
SLO demand model, built as bench/autoscaling.py builds "llmserve"; the gateway's own router, which holds
requests while nothing is ready), plus the burst controller's rule: local replicas that stay
Unschedulable for `--unschedulable-seconds` are rented (up to `--burst-max`), become ready after the
provider's provisioning time plus the engine's cold start, and are drained first when the pending
replica they stand in for goes away (the ReplicaSet deletes unassigned pods first) or gets a GPU. The
router treats local and rented replicas alike, as the gateway does (`--router ideal`: fewest requests).

    python bench/burst.py                       # seeded bursty trace, the three modes
    python bench/burst.py --local-gpus 16 --burst-max 8 --provisioning-seconds 300
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoscaling import demand_model, meets_slo, spec_for
from autoscaling_fleet import ROUTERS, CounterBook, Fleet, Replica, Result
from autoscaling_policies import Llmserve
from autoscaling_traces import Request, generate_trace
from llmserve.api.llmserve import AutoscalingSpec, LLMServeSpec
from llmserve.autoscale.spec import policy_config
from llmserve.sim.batching import Engine

BURST_TICK_SECONDS = 10.0  # the burst controller's interval (LLMSERVE_BURST_INTERVAL_SECONDS)


@dataclass(eq=False)
class Rented(Replica):
    first_routed: float | None = None


@dataclass
class BurstResult(Result):
    rented_seconds: float = 0.0
    unschedulable_to_create: list[float] = field(default_factory=list)
    ready_to_first_routed: list[float] = field(default_factory=list)
    peak_rented: int = 0


class BurstFleet(Fleet):
    def __init__(
        self, args: argparse.Namespace, name: str, local_gpus: int, burst_max: int, unsched_s: float
    ) -> None:
        args = argparse.Namespace(**{**vars(args), "gpus": local_gpus})
        super().__init__(args, llmserve_policy(args))
        self.result: BurstResult = BurstResult(name)
        self.burst_max, self.unschedulable_seconds = burst_max, unsched_s
        self.pending_since: list[float] = []  # one per Unschedulable local replica, oldest first
        self.rented: list[Rented] = []
        self.next_burst_tick = 0.0

    # The local fleet: replicas beyond the GPU cap wait Pending, remembered with the time they began.
    def add_replica(self, now: float, warm: bool = False) -> None:
        before = self.unscheduled
        super().add_replica(now, warm)
        if self.unscheduled > before:
            self.pending_since.append(now)

    def place_unscheduled(self, now: float) -> None:
        before = self.unscheduled
        super().place_unscheduled(now)
        del self.pending_since[: before - self.unscheduled]  # the oldest pending pods got the GPUs

    def remove_one(self, now: float) -> None:
        if self.unscheduled:  # a ReplicaSet deletes unassigned pods first: the newest pending goes
            self.unscheduled -= 1
            self.pending_since.pop()
            return
        super().remove_one(now)

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if not r.removed and not isinstance(r, Rented)]

    def dispatch(self, now: float, request_id: str, request: Request) -> bool:
        candidates = self.ready(now)
        if not candidates:
            return False
        replica = self.router(candidates, request)
        if isinstance(replica, Rented) and replica.first_routed is None:
            replica.first_routed = now
            self.result.ready_to_first_routed.append(now - replica.ready_at)
        replica.engine.submit(request_id, request.prompt_tokens, request.output_tokens, now)
        self.start_step(now, replica)
        return True

    def tick(self, now: float) -> None:
        live = self.live()
        serving = self.ready(now)  # rented replicas are capacity: the operator scrapes them too
        view = self.view(now, live, serving)
        if self.unscheduled:
            self.result.capped_seconds += self.policy.interval_seconds
        desired = max(0, min(self.max_replicas * 2 + self.burst_max, self.policy.desired(view)))
        if desired != view.current:
            self.result.rescales += 1
        for _ in range(desired - view.current):
            self.add_replica(now)
        for _ in range(view.current - desired):
            self.remove_one(now)
        if now >= self.next_burst_tick:
            self.burst_tick(now)
            self.next_burst_tick = now + BURST_TICK_SECONDS
        self.result.peak_replicas = max(self.result.peak_replicas, len(self.live()) + self.active_rented())

    def active_rented(self) -> int:
        return sum(1 for r in self.rented if not r.removed)

    def burst_tick(self, now: float) -> None:
        long_pending = [s for s in self.pending_since if now - s >= self.unschedulable_seconds]
        wanted = min(len(long_pending), self.burst_max)
        active = [r for r in self.rented if not r.removed]
        for since in long_pending[len(active) : wanted]:
            # At t=0 every mode starts warm (the local fleet's first replica is warm too).
            ready_at = (
                now if now == 0 else now + self.args.provisioning_seconds + self.args.cold_start_seconds
            )
            replica = Rented(
                Engine(self.profile, self.engine_config),
                now,
                ready_at,
                name=f"rented-{len(self.rented)}",
                book=CounterBook() if self.reads_counters else None,
            )
            self.rented.append(replica)
            self.replicas.append(replica)
            self.push(ready_at, "ready")
            self.result.unschedulable_to_create.append(now - since)
        # Drain the surplus: not-ready first, then the newest; a drained replica finishes what it holds.
        surplus = sorted(active, key=lambda r: (r.ready_at <= now, r.created), reverse=False)[
            : max(0, len(active) - wanted)
        ]
        for replica in surplus:
            replica.removed = True
            if not replica.engine.has_work:
                replica.stopped = now
        self.result.peak_rented = max(self.result.peak_rented, self.active_rented())

    def push(self, when: float, kind: str, payload: object = None) -> None:
        if kind != "tick":  # the last real event ends the run, as in Fleet.run
            self.last_event = max(getattr(self, "last_event", 0.0), when)
        super().push(when, kind, payload)

    def run(self, trace: list[Request], initial_replicas: int) -> BurstResult:
        super().run(trace, initial_replicas)
        result = self.result
        end = self.last_event
        gpus = self.args.gpus_per_replica
        # Fleet.run counted every replica's GPU time up to its own end; count both kinds apart here.
        result.gpu_seconds = sum(
            (min(r.stopped or end, end) - r.created) * gpus
            for r in self.replicas
            if not isinstance(r, Rented)
        )
        result.rented_seconds = sum((min(r.stopped or end, end) - r.created) * gpus for r in self.rented)
        return result


def llmserve_policy(args: argparse.Namespace) -> Llmserve:
    """The operator's default policy for this LLMServe, built exactly as bench/autoscaling.py builds
    "llmserve" (spec -> policy config, the SLO demand model, the cold start as startup time), except
    that maxReplicas is the LLMServe's own `--max-total-replicas` rather than the local GPU cap."""
    spec = _spec(args)
    return Llmserve(
        policy_config(spec),
        spec.autoscaling.interval_seconds,
        demand_model(args),
        args.cold_start_seconds,
    )


def _spec(args: argparse.Namespace) -> LLMServeSpec:
    # spec_for sizes maxReplicas from args.gpus; here the LLMServe's cap is --max-total-replicas.
    total_gpus = args.max_total_replicas * args.gpus_per_replica
    return spec_for(argparse.Namespace(**{**vars(args), "gpus": total_gpus}))


def dollars(result: BurstResult, args: argparse.Namespace) -> tuple[float, float]:
    """The run's bill in USD: (local GPUs at their amortized price, rented GPUs at the provider's)."""
    return (
        result.gpu_seconds / 3600 * args.local_usd_per_gpu_hour,
        result.rented_seconds / 3600 * args.rented_usd_per_gpu_hour,
    )


def row(result: BurstResult, args: argparse.Namespace) -> list[str]:
    good = sum(1 for a, f in result.finished if meets_slo(a, f, args))
    ttfts = sorted(f.first_token_time - a for a, f in result.finished)
    p99 = ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))] if ttfts else float("nan")
    local_h, rented_h = result.gpu_seconds / 3600, result.rented_seconds / 3600
    local_usd, rented_usd = dollars(result, args)
    u2c = result.unschedulable_to_create
    r2f = result.ready_to_first_routed
    return [
        result.name,
        f"{100 * good / max(1, len(result.finished)):.2f}%",
        f"{statistics.median(ttfts):.2f} / {p99:.2f}" if ttfts else "-",
        f"{local_h:.1f}",
        f"{rented_h:.1f}",
        f"{local_usd + rented_usd:,.0f}",
        str(result.peak_rented),
        f"{statistics.median(u2c):.0f} / {max(u2c):.0f}" if u2c else "-",
        f"{statistics.median(r2f):.1f}" if r2f else "-",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration-minutes", type=float, default=30)
    parser.add_argument("--peak-rps", type=float, default=40)
    parser.add_argument("--model", default="meta-llama/Llama-3.1-70B-Instruct")
    parser.add_argument("--gpu", default="NVIDIA-H100-80GB-HBM3")
    parser.add_argument("--gpus-per-replica", type=int, default=4)
    parser.add_argument("--local-gpus", type=int, default=24, help="the cluster's GPU cap")
    parser.add_argument("--burst-max", type=int, default=10, help="burst.maxReplicas")
    parser.add_argument("--max-total-replicas", type=int, default=16, help="LLMServe maxReplicas")
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument(
        "--cold-start-seconds", type=float, default=60, help="engine load once the GPU is there"
    )
    # RunPod documents pods starting in seconds to minutes with the image cached; large images and
    # Vast.ai hosts take minutes: 180 s is the middle of that range.
    parser.add_argument("--provisioning-seconds", type=float, default=180)
    parser.add_argument("--unschedulable-seconds", type=float, default=60)
    # Assumptions, stated: an owned H100 amortized at 2.00 USD/GPU-hour; RunPod secure-cloud H100 SXM
    # near 2.69 USD/GPU-hour (its public price list, late 2026 range 2.39-2.99).
    parser.add_argument("--local-usd-per-gpu-hour", type=float, default=2.00)
    parser.add_argument("--rented-usd-per-gpu-hour", type=float, default=2.69)
    parser.add_argument("--slo-ttft-seconds", type=float, default=1.0)
    parser.add_argument("--slo-itl-seconds", type=float, default=0.05)
    parser.add_argument(
        "--scale-down-delay-seconds", type=int, default=AutoscalingSpec().scale_down_delay_seconds
    )
    parser.add_argument(
        "--batch-slots-target", type=float, default=AutoscalingSpec().effective_batch_slots_target
    )
    parser.add_argument(
        "--router",
        choices=ROUTERS,
        default="gateway",
        help="gateway: the product's router (the default); ideal: fewest requests",
    )
    args = parser.parse_args(argv)
    args.gpus = args.local_gpus
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trace = generate_trace(args.seed, args.duration_minutes * 60, args.peak_rps, args.max_model_len)
    print(
        f"trace: {len(trace)} requests over {trace[-1].arrival / 60:.1f} min (seed {args.seed}, peak {args.peak_rps} rps); "
        f"{args.model} on {args.gpus_per_replica}x {args.gpu} per replica; local cap {args.local_gpus} GPUs "
        f"({args.local_gpus // args.gpus_per_replica} replicas); burst.maxReplicas {args.burst_max}; rented ready after "
        f"{args.provisioning_seconds:g}s provisioning + {args.cold_start_seconds:g}s cold start; renting after "
        f"{args.unschedulable_seconds:g}s Unschedulable; USD/GPU-h local {args.local_usd_per_gpu_hour} (amortized), "
        f"rented {args.rented_usd_per_gpu_hour}; router {args.router}; SLO TTFT <= {args.slo_ttft_seconds:g}s, ITL <= {1000 * args.slo_itl_seconds:g}ms"
    )
    all_rented_max = args.max_total_replicas
    modes = [
        ("local only", args.local_gpus, 0, args.unschedulable_seconds),
        ("local + burst", args.local_gpus, args.burst_max, args.unschedulable_seconds),
        ("all rented", 0, all_rented_max, 0.0),
    ]
    results = []
    for name, local_gpus, burst_max, unsched in modes:
        started = time.perf_counter()
        results.append(BurstFleet(args, name, local_gpus, burst_max, unsched).run(trace, 1))
        print(f"  simulated {name} in {time.perf_counter() - started:.0f}s", flush=True)
    header = ["mode", "SLO attainment", "TTFT p50 / p99 (s)", "local GPU-h", "rented GPU-h", "USD", "peak rented",
              "Unschedulable -> create sent p50 / max (s)", "ready -> first request (s)"]  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for result in results:
        print("| " + " | ".join(row(result, args)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
