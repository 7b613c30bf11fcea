"""Builds the demand model an LLMServe's spec asks for, and measures how long its replicas take to start."""

from __future__ import annotations

import statistics
from dataclasses import replace
from datetime import datetime
from typing import Any

from llmserve.api.llmserve import LLMServeSpec
from llmserve.autoscale.demand import Demand, DemandModel, DemandSettings
from llmserve.autoscale.policy import PolicyConfig, ReplicaMetrics
from llmserve.autoscale.promql import SloWindows
from llmserve.autoscale.replica_model import ReplicaModel, SloTargets
from llmserve.autoscale.window import EngineCounters, WindowRates
from llmserve.pods import summarize_pods
from llmserve.sim.profiles import resolve_profile

Obj = dict[str, Any]
# vLLM's own default for --max-num-seqs when the engine args do not say (V1 engine on a data-centre GPU).
VLLM_DEFAULT_MAX_NUM_SEQS = 256


def demand_key(spec: LLMServeSpec, batch_slots: int | None) -> tuple[Any, ...] | None:
    """What the demand model depends on; a change (new SLO, model, GPU) means a fresh model."""
    slo = spec.autoscaling.slo
    if slo is None:
        return None
    return (
        slo.time_to_first_token_seconds,
        slo.inter_token_latency_seconds,
        slo.percentile,
        spec.model.name,
        spec.resources.gpu_product,
        spec.resources.gpus,
        batch_slots,
    )


def demand_model_for(spec: LLMServeSpec, batch_slots: int | None) -> DemandModel | None:
    """The replica model seeded from the simulator's profile of this model on this GPU (the profile falls
    back to Llama-3.1-8B on H100 with a logged warning when it knows neither); corrected online."""
    slo = spec.autoscaling.slo
    if slo is None:
        return None
    profile = resolve_profile(
        spec.resources.gpu_product, spec.model.name, tensor_parallel_size=max(1, spec.resources.gpus)
    )
    model = ReplicaModel.from_profile(profile, batch_slots or VLLM_DEFAULT_MAX_NUM_SEQS)
    targets = SloTargets(
        slo.time_to_first_token_seconds, slo.inter_token_latency_seconds, slo.percentile / 100.0
    )
    return DemandModel(model, targets)


def scraped_counters(
    metrics_by_pod: dict[str, ReplicaMetrics],
) -> dict[str, tuple[EngineCounters, float, float]]:
    """Per pod: counters, requests in flight and running, for the pods whose page carried counters."""
    return {
        pod: (m.counters, m.requests_running + m.requests_waiting, m.requests_running)
        for pod, m in metrics_by_pod.items()
        if m.counters is not None
    }


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def startup_seconds(pods: list[Obj]) -> float | None:
    """Median time from a pod's creation to Ready over the ready pods: how long a new replica takes."""
    observed = []
    for pod in pods:
        created = _epoch(pod.get("metadata", {}).get("creationTimestamp"))
        for item in pod.get("status", {}).get("conditions") or []:
            if item.get("type") == "Ready" and item.get("status") == "True":
                ready = _epoch(item.get("lastTransitionTime"))
                if created is not None and ready is not None and ready >= created:
                    observed.append(ready - created)
    return statistics.median(observed) if observed else None


class DemandTracker:
    """One LLMServe's demand model across decisions; rebuilt when the SLO, model or GPU changes."""

    def __init__(self) -> None:
        self.model: DemandModel | None = None
        self.key: tuple[Any, ...] | None = None

    def estimate(
        self,
        spec: LLMServeSpec,
        config: PolicyConfig,
        metrics_by_pod: dict[str, ReplicaMetrics],
        pods: list[Obj],
        now_seconds: float,
        current_replicas: int,
        windows: tuple[WindowRates | None, WindowRates | None] | None = None,
        gateway_requests: float = 0.0,
        gateway_unread: bool = False,
    ) -> Demand | None:
        """Arrivals, backlog and latency against spec.autoscaling.slo (None without an SLO or counters).

        `windows` (stable, short) are the rates Prometheus answered (metricsSource: prometheus); without
        them the scraped counters feed the model's own window. `gateway_requests` (held or queued in the
        gateway, which no engine counts) join the engines' waiting requests in the backlog, and their growth
        counts as arrivals in the window; `gateway_unread` (some gateway could not be read: the count is a
        lower bound) holds the window's last gateway value instead, so a failed read is no fall."""
        key = demand_key(spec, config.batch_slots_per_replica)
        if key != self.key:
            self.key, self.model = key, demand_model_for(spec, config.batch_slots_per_replica)
        if self.model is None:
            return None
        if windows is None:
            waiting = None if gateway_unread else gateway_requests
            self.model.observe(now_seconds, scraped_counters(metrics_by_pod), waiting)
        summary = summarize_pods(pods)
        starting = max(0, current_replicas - summary.ready - summary.unschedulable)
        demand = self.model.estimate(
            now_seconds,
            capacity_replicas=len(metrics_by_pod) + starting,
            ready_replicas=len(metrics_by_pod),
            backlog_requests=sum(m.requests_waiting for m in metrics_by_pod.values()) + gateway_requests,
            startup_seconds=startup_seconds(pods),
            batch_fill=config.batch_slots_target,
            windows=windows,
        )
        if demand is None or not gateway_requests:
            return demand
        return replace(demand, gateway_requests=gateway_requests)

    def prometheus_windows(self, spec: LLMServeSpec) -> SloWindows | None:
        """The windows and quantile to ask Prometheus for (None without autoscaling.slo)."""
        slo = spec.autoscaling.slo
        if slo is None:
            return None
        settings = self.model.settings if self.model is not None else DemandSettings()
        return SloWindows(settings.stable_window_seconds, settings.panic_window_seconds, slo.percentile / 100)
