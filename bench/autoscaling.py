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
import csv
import heapq
import math
import random
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from llmserve.api.llmserve import AutoscalingSpec, LLMServeSpec
from llmserve.autoscale.policy import History, PolicyConfig, ReplicaMetrics, Snapshot, decide
from llmserve.controller.autoscaling import policy_config
from llmserve.sim.batching import Engine, EngineConfig, FinishedRequest
from llmserve.sim.profiles import resolve_profile
from llmserve.sim.virtual import run_closed_loop


@dataclass(frozen=True)
class Request:
    arrival: float
    prompt_tokens: int
    output_tokens: int


# -- traces -------------------------------------------------------------------------------------------


def load_azure_trace(path: Path, max_model_len: int) -> list[Request]:
    """Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens); times from the first row."""
    rows = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            stamp = row["TIMESTAMP"].strip()
            if "." in stamp:  # the trace has 7 fractional digits; datetime takes 6
                head, fraction = stamp.split(".", 1)
                stamp = f"{head}.{fraction[:6]}"
            rows.append(
                (
                    datetime.fromisoformat(stamp).timestamp(),
                    int(row["ContextTokens"]),
                    int(row["GeneratedTokens"]),
                )
            )
    rows.sort()
    start = rows[0][0] if rows else 0.0
    return [_fit(t - start, p, o, max_model_len) for t, p, o in rows]


def _fit(arrival: float, prompt: int, output: int, max_model_len: int) -> Request:
    prompt = max(1, min(prompt, max_model_len - 64))
    return Request(arrival, prompt, max(1, min(output, max_model_len - prompt)))


def generate_trace(seed: int, duration_seconds: float, peak_rps: float, max_model_len: int) -> list[Request]:
    """Poisson arrivals under a compressed daily curve (night trough, day peak) with sudden 2-3x spikes.

    Token counts are lognormal around the Azure 2023 conversation trace (prompt median ~1000 tokens,
    output median ~130).
    """
    rng = random.Random(seed)
    spikes = [(rng.uniform(0.15, 0.85) * duration_seconds, rng.uniform(60, 180), rng.uniform(2.0, 3.0))
              for _ in range(3)]  # fmt: skip

    def rate(t: float) -> float:
        daily = 0.2 + 0.8 * math.sin(math.pi * t / duration_seconds) ** 2
        boost = max([m for start, length, m in spikes if start <= t < start + length], default=1.0)
        return peak_rps * daily * boost / 2.0  # the daily peak is half the spike peak

    ceiling = peak_rps * 1.5
    requests, t = [], 0.0
    while True:
        t += rng.expovariate(ceiling)
        if t >= duration_seconds:
            return requests
        if rng.random() < rate(t) / ceiling:  # thinning: a non-homogeneous Poisson process
            prompt = int(rng.lognormvariate(math.log(1000), 0.8))
            output = int(rng.lognormvariate(math.log(130), 0.9))
            requests.append(_fit(t, prompt, output, max_model_len))


def write_azure_trace(path: Path, requests: list[Request]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for r in requests:
            stamp = datetime.fromtimestamp(1700136946 + r.arrival).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
            writer.writerow([stamp, r.prompt_tokens, r.output_tokens])


# -- policies -----------------------------------------------------------------------------------------


@dataclass
class View:
    """What a policy sees at a tick: the fleet's replica counts and each ready replica's engine gauges."""

    now: float
    current: int
    ready: int
    starting: int
    unschedulable: int
    replicas: list[ReplicaMetrics]
    held_at_router: int


class Llmserve:
    name = "llmserve (this policy)"

    def __init__(self, config: PolicyConfig, interval_seconds: float) -> None:
        self.config, self.interval_seconds = config, interval_seconds
        self.history = History()

    def desired(self, view: View) -> int:
        snapshot = Snapshot(view.now, view.current, view.ready, view.unschedulable, tuple(view.replicas))
        decision = decide(snapshot, self.config, self.history)
        self.history = decision.history
        return decision.desired_replicas


class HpaLike:
    """HPA on average running requests per pod: 15 s sync, 10% tolerance, 300 s scale-down stabilization,
    scale-up at most max(100%, 4 pods) per period, not-ready pods counted as 0 on the way up."""

    name = "HPA-style (running reqs)"

    def __init__(self, target_running: float, max_replicas: int, stabilization_seconds: float = 300) -> None:
        self.target, self.max_replicas, self.interval_seconds = target_running, max_replicas, 15.0
        self.window: deque[tuple[float, int]] = deque()
        self.stabilization = stabilization_seconds

    def desired(self, view: View) -> int:
        if not view.replicas:
            return view.current
        running = sum(r.requests_running for r in view.replicas)
        ratio = running / len(view.replicas) / self.target
        if abs(ratio - 1) <= 0.1:
            recommended = view.current
        elif ratio > 1:
            recommended = max(view.current, math.ceil(running / self.target))
        else:
            recommended = math.ceil(len(view.replicas) * ratio)
        recommended = max(1, min(self.max_replicas, recommended, max(2 * view.current, view.current + 4)))
        self.window.append((view.now, recommended))
        while self.window[0][0] < view.now - self.stabilization:
            self.window.popleft()
        return recommended if recommended >= view.current else max(r for _, r in self.window)


class KedaLike(HpaLike):
    """KEDA Prometheus trigger on vllm:num_requests_waiting (AverageValue 5), 30 s polling, and the HPA's
    300 s scale-down stabilization behind it (KEDA's 300 s cooldown only governs 1 -> 0)."""

    name = "KEDA-style (waiting > 5)"

    def __init__(self, max_replicas: int, threshold: float = 5.0) -> None:
        super().__init__(threshold, max_replicas)
        self.interval_seconds = 30.0

    def desired(self, view: View) -> int:
        waiting = sum(r.requests_waiting for r in view.replicas)
        recommended = max(1, min(self.max_replicas, math.ceil(waiting / self.target)))
        if recommended > view.current:
            return min(recommended, max(2 * view.current, view.current + 4))
        self.window.append((view.now, recommended))
        while self.window[0][0] < view.now - self.stabilization:
            self.window.popleft()
        return min(view.current, max(r for _, r in self.window))


class KubeAiLike:
    """KubeAI: in-flight requests (proxy queue + engine) averaged over a 10 min window, sampled every 10 s;
    desired = ceil(average / targetRequests), scale-down delayed 30 s."""

    name = "KubeAI-style (10 min avg)"

    def __init__(self, target_requests: float, max_replicas: int) -> None:
        self.target, self.max_replicas, self.interval_seconds = target_requests, max_replicas, 10.0
        self.samples: deque[float] = deque(maxlen=60)
        self.below_since: float | None = None

    def desired(self, view: View) -> int:
        in_flight = view.held_at_router + sum(r.requests_running + r.requests_waiting for r in view.replicas)
        self.samples.append(in_flight)
        wanted = max(1, min(self.max_replicas, math.ceil(statistics.fmean(self.samples) / self.target)))
        if wanted >= view.current:
            self.below_since = None
            return wanted
        self.below_since = self.below_since if self.below_since is not None else view.now
        return wanted if view.now - self.below_since >= 30 else view.current


class Static:
    def __init__(self, replicas: int) -> None:
        self.replicas, self.interval_seconds = replicas, 60.0
        self.name = f"static at peak ({replicas} replicas)"

    def desired(self, view: View) -> int:
        return self.replicas


# -- the fleet ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class Replica:
    engine: Engine
    created: float
    ready_at: float
    removed: bool = False
    stopped: float | None = None
    stepping: bool = False

    @property
    def load(self) -> int:
        return self.engine.num_running + self.engine.num_waiting


@dataclass
class Result:
    name: str
    finished: list[tuple[float, FinishedRequest]] = field(default_factory=list)  # (true arrival, timeline)
    gpu_seconds: float = 0.0
    rescales: int = 0
    peak_replicas: int = 0


class Fleet:
    def __init__(self, args: argparse.Namespace, policy: Llmserve | HpaLike | KubeAiLike | Static) -> None:
        self.args, self.policy = args, policy
        self.profile = resolve_profile(args.gpu, args.model, tensor_parallel_size=args.gpus_per_replica)
        self.engine_config = EngineConfig(max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len)
        self.max_replicas = args.gpus // args.gpus_per_replica
        self.replicas: list[Replica] = []
        self.unscheduled = 0  # wanted replicas that found no free GPUs
        self.held: deque[tuple[str, Request]] = deque()
        self.arrivals: dict[str, float] = {}
        self.events: list[tuple[float, int, str, object]] = []
        self.sequence = 0
        self.result = Result(policy.name)

    def push(self, when: float, kind: str, payload: object = None) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, kind, payload))

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if not r.removed]

    def add_replica(self, now: float, warm: bool = False) -> None:
        if len([r for r in self.replicas if r.stopped is None]) >= self.max_replicas:
            self.unscheduled += 1
            return
        ready_at = now if warm else now + self.args.cold_start_seconds
        self.replicas.append(Replica(Engine(self.profile, self.engine_config), now, ready_at))
        self.push(ready_at, "ready")

    def run(self, trace: list[Request], initial_replicas: int) -> Result:
        for _ in range(initial_replicas):
            self.add_replica(0.0, warm=True)
        for index, request in enumerate(trace):
            self.push(request.arrival, "arrival", (f"r{index}", request))
        self.push(0.0, "tick")
        end = trace[-1].arrival if trace else 0.0
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if kind == "arrival":
                self.route(now, *payload)  # type: ignore[misc]
            elif kind == "step":
                self.step_done(now, payload)  # type: ignore[arg-type]
            elif kind == "ready":
                self.dispatch_held(now)
            elif kind == "tick" and (
                now <= end or self.held or any(r.engine.has_work for r in self.replicas)
            ):
                self.tick(now)
                self.push(now + self.policy.interval_seconds, "tick")
            end = max(end, now)
        for replica in self.replicas:
            self.result.gpu_seconds += (
                (replica.stopped or end) - replica.created
            ) * self.args.gpus_per_replica
        return self.result

    def ready(self, now: float) -> list[Replica]:
        return [r for r in self.replicas if not r.removed and r.ready_at <= now]

    def route(self, now: float, request_id: str, request: Request) -> None:
        self.arrivals[request_id] = request.arrival
        if self.held or not self.dispatch(now, request_id, request):
            self.held.append((request_id, request))

    def dispatch(self, now: float, request_id: str, request: Request) -> bool:
        """To the least-loaded ready replica (vLLM queues without a limit); False means hold it."""
        candidates = self.ready(now)
        if not candidates:
            return False
        replica = min(candidates, key=lambda r: r.load)
        replica.engine.submit(request_id, request.prompt_tokens, request.output_tokens, now)
        self.start_step(now, replica)
        return True

    def dispatch_held(self, now: float) -> None:
        while self.held and self.dispatch(now, *self.held[0]):
            self.held.popleft()

    def start_step(self, now: float, replica: Replica) -> None:
        if not replica.stepping and replica.engine.has_work:
            replica.stepping = True
            self.push_step(replica.engine.step(now), replica)

    def push_step(self, result: object, replica: Replica) -> None:
        self.push(result.end_time, "step", (replica, result))  # type: ignore[attr-defined]

    def step_done(self, now: float, payload: object) -> None:
        replica, result = payload  # type: ignore[misc]
        for done in result.finished:
            self.result.finished.append((self.arrivals.pop(done.request_id), done))
        replica.stepping = False
        if replica.engine.has_work:
            self.start_step(now, replica)
        elif replica.removed and replica.stopped is None:
            replica.stopped = now
            self.place_unscheduled(now)

    def place_unscheduled(self, now: float) -> None:
        while self.unscheduled:
            self.unscheduled -= 1
            before = len(self.replicas)
            self.add_replica(now)
            if len(self.replicas) == before:
                return

    def tick(self, now: float) -> None:
        live = self.live()
        ready = [r for r in live if r.ready_at <= now]
        view = View(
            now=now,
            current=len(live) + self.unscheduled,
            ready=len(ready),
            starting=len(live) - len(ready),
            unschedulable=self.unscheduled,
            replicas=[
                ReplicaMetrics(r.engine.num_waiting, r.engine.num_running, r.engine.kv_usage_fraction)
                for r in ready
            ],
            held_at_router=len(self.held),
        )
        desired = max(0, min(self.max_replicas * 2, self.policy.desired(view)))
        if desired != view.current:
            self.result.rescales += 1
        for _ in range(desired - view.current):
            self.add_replica(now)
        for _ in range(view.current - desired):
            self.remove_one(now)
        self.result.peak_replicas = max(self.result.peak_replicas, len(self.live()))

    def remove_one(self, now: float) -> None:
        if self.unscheduled:
            self.unscheduled -= 1
            return
        live = self.live()
        starting = [r for r in live if r.ready_at > now]  # like a ReplicaSet: not-ready pods go first
        victim = starting[-1] if starting else min(live, key=lambda r: r.load)
        victim.removed = True
        if not victim.engine.has_work:
            victim.stopped = now
            self.place_unscheduled(now)


# -- the comparison -----------------------------------------------------------------------------------


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
        "llmserve": lambda: Llmserve(ours, spec.autoscaling.interval_seconds),
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
