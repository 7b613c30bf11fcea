"""Autoscaling policies the fleet benchmark compares: llmserve's own, HPA-, KEDA-, KubeAI-style, static, oracle."""

from __future__ import annotations

import math
import statistics
from collections import deque

from autoscaling_fleet import View
from llmserve.autoscale.demand import DemandModel
from llmserve.autoscale.policy import History, PolicyConfig, Snapshot, decide


class Llmserve:
    """The operator's own policy and demand model, fed what the operator would scrape."""

    name = "llmserve (this policy)"
    reads_counters = True

    def __init__(
        self,
        config: PolicyConfig,
        interval_seconds: float,
        demand: DemandModel | None = None,
        startup_seconds: float | None = None,
    ) -> None:
        self.config, self.interval_seconds = config, interval_seconds
        self.demand, self.startup_seconds = demand, startup_seconds
        self.history = History()
        self.decisions: list[tuple[float, int, str]] = []

    def start(self, now: float, replicas: int) -> None:
        """The fleet starts warm: as if the policy had recommended `replicas` just before."""
        self.history = History(((now, replicas),), now, replicas)

    def desired(self, view: View) -> int:
        demand = None
        starting = max(0, view.current - view.ready - view.unschedulable)
        if self.demand is not None:
            # What waits at the router is in flight too (the operator reads it from the gateway).
            self.demand.observe(view.now, view.counters, view.held_at_router)
            backlog = view.held_at_router + sum(r.requests_waiting for r in view.replicas)
            demand = self.demand.estimate(
                view.now,
                capacity_replicas=len(view.replicas) + starting,
                ready_replicas=len(view.replicas),
                backlog_requests=backlog,
                startup_seconds=self.startup_seconds,
                batch_fill=self.config.batch_slots_target,
            )
        snapshot = Snapshot(
            view.now, view.current, view.ready, view.unschedulable, tuple(view.replicas), demand=demand
        )
        decision = decide(snapshot, self.config, self.history)
        self.history = decision.history
        if decision.desired_replicas != view.current:
            self.decisions.append((view.now, decision.desired_replicas, decision.reason))
        return decision.desired_replicas


class HpaLike:
    """HPA on average running requests per pod: 15 s sync, 10% tolerance, 300 s scale-down stabilization,
    scale-up at most max(100%, 4 pods) per period, not-ready pods counted as 0 on the way up."""

    name = "HPA-style (running reqs)"

    def __init__(self, target_running: float, max_replicas: int, stabilization_seconds: float = 300) -> None:
        self.target, self.max_replicas, self.interval_seconds = target_running, max_replicas, 15.0
        self.window: deque[tuple[float, int]] = deque()
        self.stabilization = stabilization_seconds

    def start(self, now: float, replicas: int) -> None:
        """The fleet starts warm: as if the HPA had recommended `replicas` just before."""
        self.window.append((now, replicas))

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

    def __init__(self, max_replicas: int, threshold: float = 5.0, gateway_queue: bool = False) -> None:
        super().__init__(threshold, max_replicas)
        self.interval_seconds = 30.0
        # With the gateway queueing (--gateway-queue) a KEDA user would add the gateway's queued requests
        # (llmserve_gateway_queued_requests) to the trigger: the engines' queues stay empty then.
        self.gateway_queue = gateway_queue

    def desired(self, view: View) -> int:
        waiting = sum(r.requests_waiting for r in view.replicas)
        if self.gateway_queue:
            waiting += view.held_at_router
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
