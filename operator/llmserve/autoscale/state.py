"""Converts the policy's memory and decisions to and from the LLMServe API: status.autoscaling and conditions."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from llmserve.api.base import Condition, now_utc
from llmserve.api.llmserve import Recommendation, ScaleStatus
from llmserve.autoscale.policy import Decision, History, PolicyConfig, Snapshot

log = logging.getLogger(__name__)

Obj = dict[str, Any]
OWN_CONDITIONS = ("AbleToScale", "ScalingActive", "ScalingLimited")

_LIMIT_CONDITIONS = {
    "max": ("TooManyReplicas", "the desired count is clamped to maxReplicas {max}"),
    "min": ("TooFewReplicas", "the desired count is clamped to minReplicas {min}"),
    "step": ("ScaleUpLimit", "scale-up is limited to {step} replica(s) per decision"),
    "capacity": (
        "InsufficientCapacity",
        "{pending} replica(s) Pending: the cluster has no free GPUs for them",
    ),
}


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def history_from_status(raw: Obj | None) -> History:
    """The policy's memory as the last operator (maybe another process) left it in status.autoscaling."""
    raw = raw or {}
    window = []
    for item in raw.get("recommendations") or []:
        when = _epoch(item.get("time"))
        if when is not None and isinstance(item.get("replicas"), int):
            window.append((when, item["replicas"]))
    return History(
        recommendations=tuple(sorted(window)),
        last_active_seconds=_epoch(raw.get("lastActiveTime")),
        last_desired_replicas=raw.get("desiredReplicas"),
        raised_outside_seconds=_epoch(raw.get("replicasRaisedOutsideTime")),
        last_burst_seconds=_epoch(raw.get("lastBurstTime")),
    )


def condition(type_: str, status: str, reason: str, message: str, generation: int) -> Condition:
    return Condition.model_validate(
        {"type": type_, "status": status, "reason": reason, "message": message,
         "lastTransitionTime": now_utc(), "observedGeneration": generation}
    )  # fmt: skip


def decision_conditions(
    decision: Decision,
    snapshot: Snapshot,
    config: PolicyConfig,
    scale_error: str,
    scrape_errors: dict[str, str],
    generation: int,
    gateway_problem: str = "",
) -> list[Condition]:
    if scale_error:
        able = ("False", "FailedUpdateScale", f"the scale subresource could not be written: {scale_error}")
    elif decision.stabilized:
        able = ("True", "ScaleDownStabilized", "recent recommendations were higher; holding the highest one")
    else:
        able = ("True", "ReadyForNewScale", "the autoscaler can change the replica count")
    if decision.no_data:
        first = next(iter(scrape_errors.items()), ("", ""))
        active = (
            "False",
            "FailedGetMetrics",
            f"no ready replica's metrics could be read ({first[0]}: {first[1]})",
        )
    elif decision.scaled_to_zero:
        active = ("False", "ScaledToZero", "no replicas; a request through the gateway wakes the model")
    elif decision.signals.load_ratio is None:
        active = ("True", "WaitingForReplicas", "replicas are starting; no metrics to read yet")
    else:
        active = ("True", "ValidMetricFound", "scaling on queue depth and KV-cache utilization"
                  + ("; arrivals and latency against the SLO" if decision.signals.arrivals_per_second is not None else ""))  # fmt: skip
    if gateway_problem and active[0] == "True":
        # The engines still decide; the backlog held in the gateway is unknown, so no scale-down.
        active = ("True", "GatewayMetricsUnavailable", f"{active[2]}; without the gateway's held requests "
                  f"(no scale-down until it is read again): {gateway_problem}")  # fmt: skip
    elif snapshot.gateway_waiting_requests and active[0] == "True":
        active = (
            active[0],
            active[1],
            f"{active[2]}; {snapshot.gateway_waiting_requests:.0f} requests held in the gateway",
        )
    if decision.limited_by:
        reason, template = _LIMIT_CONDITIONS[decision.limited_by]
        pending = snapshot.unschedulable_replicas
        message = template.format(
            max=config.max_replicas, min=config.min_replicas, step=config.scale_up_max_step, pending=pending
        )
        limited = ("True", reason, message)
    else:
        limited = ("False", "DesiredWithinRange", "the desired count is within minReplicas and maxReplicas")
    return [
        condition(t, *values, generation)
        for t, values in zip(OWN_CONDITIONS, (able, active, limited), strict=True)
    ]


def scale_status(
    decision: Decision, scraped: int, last_scale: tuple[str, str] | None, previous: Obj | None
) -> ScaleStatus:
    signals = decision.signals
    previous = previous or {}
    last_time, last_reason = last_scale or (previous.get("lastScaleTime"), previous.get("lastScaleReason"))
    return ScaleStatus(
        queue_depth_per_replica=None if signals.queue_depth_per_replica is None else round(signals.queue_depth_per_replica, 2),
        kv_cache_utilization=None if signals.kv_cache_fraction is None else round(signals.kv_cache_fraction, 3),
        requests_running_per_replica=None if signals.running_per_replica is None else round(signals.running_per_replica, 2),
        desired_replicas=decision.desired_replicas,
        last_scale_time=last_time,
        last_scale_reason=last_reason,
        scraped_replicas=scraped,
        recommendations=[Recommendation(replicas=r, time=rfc3339(t)) for t, r in decision.history.recommendations],
        last_active_time=None if decision.history.last_active_seconds is None else rfc3339(decision.history.last_active_seconds),
        replicas_raised_outside_time=None if decision.history.raised_outside_seconds is None else rfc3339(decision.history.raised_outside_seconds),
        arrivals_per_second=None if signals.arrivals_per_second is None else round(signals.arrivals_per_second, 2),
        replica_requests_per_second=None if signals.replica_requests_per_second is None else round(signals.replica_requests_per_second, 3),
        latency=signals.latency_description or None,
        last_burst_time=None if decision.history.last_burst_seconds is None else rfc3339(decision.history.last_burst_seconds),
    )  # fmt: skip
