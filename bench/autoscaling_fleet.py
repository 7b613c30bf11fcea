"""The simulated fleet: replicas on the batching model, cold starts, a GPU cap, a router, and a policy loop."""

from __future__ import annotations

import argparse
import bisect
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from autoscaling_traces import Request
from llmserve.autoscale.histogram import Histogram
from llmserve.autoscale.policy import ReplicaMetrics
from llmserve.autoscale.window import EngineCounters
from llmserve.gateway import routing as gateway_routing
from llmserve.sim.batching import Engine, EngineConfig, FinishedRequest, StepResult
from llmserve.sim.metrics import PER_TOKEN_BUCKETS, TTFT_BUCKETS
from llmserve.sim.profiles import resolve_profile


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
    # Per ready replica (by name): cumulative vLLM counters, requests in flight, requests running. Only
    # filled for policies that read counters (`reads_counters`), since building them costs simulation time.
    counters: dict[str, tuple[EngineCounters, float, float]] = field(default_factory=dict)


class Policy(Protocol):
    name: str
    interval_seconds: float

    def desired(self, view: View) -> int: ...


class CounterBook:
    """One engine's cumulative vLLM counters, kept the way its /metrics would show them."""

    def __init__(self) -> None:
        self.finished = 0.0
        self.prompt_tokens = 0.0
        self.generation_tokens = 0.0
        self.ttft = [0.0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.itl = [0.0] * (len(PER_TOKEN_BUCKETS) + 1)
        self.itl_sum = 0.0

    def record(self, result: StepResult) -> None:
        self.finished += len(result.finished)
        self.prompt_tokens += result.num_prompt_tokens
        self.generation_tokens += result.num_generation_tokens
        for value in result.time_to_first_token_seconds:
            self.ttft[bisect.bisect_left(TTFT_BUCKETS, value)] += 1
            self.ttft_sum += value
        # A step's decode tokens share one inter-token time: count distinct values, not tokens.
        for value, n in Counter(result.inter_token_seconds).items():
            self.itl[bisect.bisect_left(PER_TOKEN_BUCKETS, value)] += n
            self.itl_sum += value * n

    @staticmethod
    def _histogram(bounds: tuple[float, ...], per_bucket: list[float], total: float) -> Histogram:
        cumulative, running = [], 0.0
        for n in per_bucket:
            running += n
            cumulative.append(running)
        return Histogram(bounds, tuple(cumulative), total)

    def snapshot(self) -> EngineCounters:
        return EngineCounters(
            requests_finished=self.finished,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.generation_tokens,
            time_to_first_token=self._histogram(TTFT_BUCKETS, self.ttft, self.ttft_sum),
            inter_token_latency=self._histogram(PER_TOKEN_BUCKETS, self.itl, self.itl_sum),
        )


@dataclass(eq=False)
class Replica:
    engine: Engine
    created: float
    ready_at: float
    removed: bool = False
    removed_at: float | None = None  # when the policy let it go (it drains until `stopped`)
    stopped: float | None = None
    stepping: bool = False
    name: str = ""
    book: CounterBook | None = None

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
    capped_seconds: float = 0.0  # time during which wanted replicas found no free GPUs (the cap decided)
    replicas_over_time: list[tuple[float, int]] = field(default_factory=list)
    # Per replica (created, ready_at, removed_at, stopped), None where it never happened; and the run's end.
    lifetimes: list[tuple[float, float, float | None, float | None]] = field(default_factory=list)
    end_seconds: float = 0.0
    # True arrival times of requests the gateway queue refused with a 503 (full, timed out, or displaced by
    # a request that could still meet its TTFT target): SLO misses that took no GPU time.
    rejected: list[float] = field(default_factory=list)


Router = Callable[[list[Replica], Request], Replica]


def least_loaded(candidates: list[Replica], request: Request) -> Replica:
    """The ideal router (`--router ideal`): the ready replica with the fewest requests running + waiting,
    first in list order on a tie."""
    return min(candidates, key=lambda r: r.load)


class GatewayRouter:
    """The gateway's own router (`--router gateway`, the default): `llmserve.gateway.routing.route` with
    slot-aware least load, over the fleet's ready replicas as the gateway would see them.

    The simulated gateway is every replica's only client and sees each engine's gauges fresh, so its
    in-flight count is the engine's running + waiting (a real gateway reads the gauges from a scrape).
    """

    def __init__(
        self,
        batch_slots: int,
        seed: int = 0,
        policy: gateway_routing.Policy = gateway_routing.Policy.LEAST_LOAD,
    ) -> None:
        self.batch_slots, self.policy = batch_slots, policy
        self.rng = random.Random(seed)  # the gateway breaks exact ties at random; seeded, runs repeat

    def __call__(self, candidates: list[Replica], request: Request) -> Replica:
        seen = [
            gateway_routing.Candidate(
                str(index),
                outstanding=r.load,
                scraped_running=r.engine.num_running,
                scraped_waiting=r.engine.num_waiting,
                kv_usage_fraction=r.engine.kv_usage_fraction,
                capacity=self.batch_slots,
            )
            for index, r in enumerate(candidates)
        ]
        choice = gateway_routing.route(self.policy, seen, self.rng)
        if choice is None:  # route() only returns None for no candidates; dispatch never asks then
            raise ValueError("the gateway router was asked to choose among no replicas")
        return candidates[int(choice.candidate.key)]


ROUTERS = ("gateway", "ideal")


def make_router(name: str, args: argparse.Namespace) -> Router:
    """`--router`: "gateway" (the product's router, the default) or "ideal" (plain fewest requests)."""
    if name == "gateway":
        return GatewayRouter(args.max_num_seqs, seed=getattr(args, "seed", 0))
    if name == "ideal":
        return least_loaded
    raise ValueError(f"--router must be one of {', '.join(ROUTERS)}, not {name!r}")


class Fleet:
    def __init__(self, args: argparse.Namespace, policy: Policy, router: Router | None = None) -> None:
        # Without an explicit router, args.router picks one (the gateway's when the flag is absent).
        if router is None:
            router = make_router(getattr(args, "router", "gateway"), args)
        self.args, self.policy, self.router = args, policy, router
        self.reads_counters = bool(getattr(policy, "reads_counters", False))
        self.profile = resolve_profile(args.gpu, args.model, tensor_parallel_size=args.gpus_per_replica)
        self.engine_config = EngineConfig(max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len)
        self.max_replicas = args.gpus // args.gpus_per_replica
        self.replicas: list[Replica] = []
        self.unscheduled = 0  # wanted replicas that found no free GPUs
        self.held: deque[tuple[str, Request]] = deque()
        # Held past the TTFT target (--queue-order late-last): served once nothing fresher waits.
        self.late: deque[tuple[str, Request]] = deque()
        # The gateway queue's bound (--queue-size; 0: none, and no engine-queue run has one) and order.
        self.gateway_queue = bool(getattr(args, "gateway_queue", False))
        self.queue_bound = getattr(args, "queue_size", 0) if self.gateway_queue else 0
        self.late_last = getattr(args, "queue_order", "fifo") == "late-last"
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
        book = CounterBook() if self.reads_counters else None
        engine = Engine(self.profile, self.engine_config)
        self.replicas.append(Replica(engine, now, ready_at, name=f"replica-{len(self.replicas)}", book=book))
        self.push(ready_at, "ready")

    def run(self, trace: list[Request], initial_replicas: int) -> Result:
        for _ in range(initial_replicas):
            self.add_replica(0.0, warm=True)
        # The trace starts in steady state: a policy with a scale-down window remembers the initial fleet as
        # its own recent recommendation, instead of seeing an empty fleet at t=0 (before the first arrival)
        # and dropping to one replica that the first minute's load then piles onto.
        start = getattr(self.policy, "start", None)
        if start is not None:
            start(0.0, initial_replicas)
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
                now <= end or self.held or self.late or any(r.engine.has_work for r in self.replicas)
            ):
                self.tick(now)
                self.push(now + self.policy.interval_seconds, "tick")
            end = max(end, now)
        self.result.end_seconds = end
        for replica in self.replicas:
            self.result.lifetimes.append(
                (replica.created, replica.ready_at, replica.removed_at, replica.stopped)
            )
            self.result.gpu_seconds += (
                (replica.stopped or end) - replica.created
            ) * self.args.gpus_per_replica
        return self.result

    def ready(self, now: float) -> list[Replica]:
        return [r for r in self.replicas if not r.removed and r.ready_at <= now]

    def route(self, now: float, request_id: str, request: Request) -> None:
        self.arrivals[request_id] = request.arrival
        if not (self.held or self.late) and self.dispatch(now, request_id, request):
            return
        if self.queue_bound:
            self.expire_held(now)
            if len(self.held) + len(self.late) >= self.queue_bound:
                if not self.late:
                    self.reject(request_id)  # every waiter can still meet the target: the new one gets 503
                    return
                self.reject(self.late.popleft()[0])  # the longest-waiting late one gets the 503 instead
        self.held.append((request_id, request))

    def reject(self, request_id: str) -> None:
        self.result.rejected.append(self.arrivals.pop(request_id))

    def expire_held(self, now: float) -> None:
        """The gateway queue's bookkeeping at `now`: waiters past the TTFT target move behind the others
        (late-last), and waiters past --queue-timeout get their 503 (--gateway-queue with a bound only)."""
        if self.late_last:
            deadline = now - self.args.slo_ttft_seconds
            while self.held and self.held[0][1].arrival < deadline:
                self.late.append(self.held.popleft())
        if self.queue_bound:
            expired = now - self.args.queue_timeout_seconds
            for waiting in (self.late, self.held):
                while waiting and waiting[0][1].arrival < expired:
                    self.reject(waiting.popleft()[0])

    def dispatch(self, now: float, request_id: str, request: Request) -> bool:
        """To the least-loaded ready replica (vLLM queues without a limit); False means hold it."""
        candidates = self.ready(now)
        if self.gateway_queue:
            # The gateway's --queue-when-full: a request waits in the gateway while every batch is full.
            candidates = [r for r in candidates if r.load < self.args.max_num_seqs]
        if not candidates:
            return False
        replica = self.router(candidates, request)
        replica.engine.submit(request_id, request.prompt_tokens, request.output_tokens, now)
        self.start_step(now, replica)
        return True

    def dispatch_held(self, now: float) -> None:
        self.expire_held(now)
        while self.held and self.dispatch(now, *self.held[0]):
            self.held.popleft()
        while not self.held and self.late and self.dispatch(now, *self.late[0]):
            self.late.popleft()

    def start_step(self, now: float, replica: Replica) -> None:
        if not replica.stepping and replica.engine.has_work:
            replica.stepping = True
            self.push_step(replica.engine.step(now), replica)

    def push_step(self, result: object, replica: Replica) -> None:
        self.push(result.end_time, "step", (replica, result))  # type: ignore[attr-defined]

    def step_done(self, now: float, payload: object) -> None:
        replica, result = payload  # type: ignore[misc]
        if replica.book is not None:
            replica.book.record(result)
        for done in result.finished:
            self.result.finished.append((self.arrivals.pop(done.request_id), done))
        replica.stepping = False
        if result.finished and (self.held or self.late):
            self.dispatch_held(now)
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

    def view(self, now: float, live: list[Replica], scraped: list[Replica]) -> View:
        """What the policy sees at `now`: the fleet's counts and the metrics of the replicas it scrapes."""
        ready = len([r for r in live if r.ready_at <= now])
        return View(
            now=now,
            current=len(live) + self.unscheduled,
            ready=ready,
            starting=len(live) - ready,
            unschedulable=self.unscheduled,
            replicas=[
                ReplicaMetrics(r.engine.num_waiting, r.engine.num_running, r.engine.kv_usage_fraction)
                for r in scraped
            ],
            held_at_router=len(self.held) + len(self.late),
            counters={
                r.name: (r.book.snapshot(), float(r.load), float(r.engine.num_running))
                for r in scraped
                if r.book is not None
            },
        )

    def tick(self, now: float) -> None:
        live = self.live()
        view = self.view(now, live, [r for r in live if r.ready_at <= now])
        if self.unscheduled:
            self.result.capped_seconds += self.policy.interval_seconds
        desired = max(0, min(self.max_replicas * 2, self.policy.desired(view)))
        if desired != view.current:
            self.result.rescales += 1
        for _ in range(desired - view.current):
            self.add_replica(now)
        for _ in range(view.current - desired):
            self.remove_one(now)
        self.result.peak_replicas = max(self.result.peak_replicas, len(self.live()))
        self.result.replicas_over_time.append((now, len(self.live())))

    def remove_one(self, now: float) -> None:
        if self.unscheduled:
            self.unscheduled -= 1
            return
        live = self.live()
        starting = [r for r in live if r.ready_at > now]  # like a ReplicaSet: not-ready pods go first
        victim = starting[-1] if starting else min(live, key=lambda r: r.load)
        victim.removed, victim.removed_at = True, now
        if not victim.engine.has_work:
            victim.stopped = now
            self.place_unscheduled(now)
