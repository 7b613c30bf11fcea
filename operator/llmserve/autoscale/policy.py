"""The scaling policy: a metrics snapshot plus recent history in, a desired replica count out (pure, no I/O).

The algorithm and its formulas are documented in docs/autoscaling.md; the operator and the fleet simulator
(bench/autoscaling.py) both call `decide`, so what the benchmark measures is what the operator runs.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from llmserve.autoscale.hold import (
    CANCEL_AFTER_SECONDS,
    burst_held,
    burst_seconds,
    hold_newly_ready,
    hold_seconds,
)
from llmserve.autoscale.policy_types import (
    Decision,
    History,
    Limit,
    PolicyConfig,
    ReplicaMetrics,
    Signals,
    Snapshot,
)

if TYPE_CHECKING:
    from llmserve.autoscale.demand import Demand

# The types are imported from here by the operator, the benchmark and the tests.
__all__ = [
    "Decision",
    "History",
    "Limit",
    "PolicyConfig",
    "ReplicaMetrics",
    "Signals",
    "Snapshot",
    "decide",
    "observe",
]

# Guards ceil() against float noise: 3 * (4.4 / 4.4) must not become 4 replicas.
_EPSILON = 1e-9


def _ceil(value: float) -> int:
    return math.ceil(value - _EPSILON)


def observe(snapshot: Snapshot, config: PolicyConfig) -> Signals:
    """Turns per-replica metrics into load ratios. Starting replicas count as capacity (load 0)."""
    scraped = snapshot.replicas
    if not scraped:
        return Signals()
    capacity = len(scraped) + snapshot.starting_replicas
    in_gateway = snapshot.gateway_waiting_requests
    waiting = (sum(r.requests_waiting for r in scraped) + in_gateway) / capacity
    running = sum(r.requests_running for r in scraped) / capacity
    kv_values = [r.kv_cache_fraction for r in scraped if r.kv_cache_fraction is not None]
    kv_mean = sum(kv_values) / len(kv_values) if kv_values else None
    slots = config.batch_slots_per_replica
    # Queue depth against the target. With a known batch size the backlog is weighed against everything a
    # replica holds at target (a full batch plus the target queue), so a deep queue asks for replicas in
    # proportion to the work waiting rather than one replica per `queue_depth_target` requests.
    queue_ratio = (
        (running + waiting) / (slots * config.batch_slots_target + config.queue_depth_target)
        if slots and waiting > 0
        else waiting / config.queue_depth_target
    )
    candidates: list[tuple[float, str, str]] = [
        (
            queue_ratio,
            "queue depth",
            f"queue depth {waiting:.1f}/replica"
            + (f" ({in_gateway:.0f} held in the gateway)" if in_gateway else ""),
        )
    ]
    if kv_values:
        # Spread over the whole capacity: a starting replica has an empty cache.
        kv_over_capacity = sum(kv_values) / len(kv_values) * len(scraped) / capacity
        candidates.append(
            (kv_over_capacity / config.kv_cache_target, "kv cache", f"KV cache {kv_over_capacity:.0%}")
        )
    if slots:
        candidates.append(
            (
                running / (slots * config.batch_slots_target),
                "batch slots",
                f"running batch {running:.1f}/replica",
            )
        )
    ratio, dominant, description = max(candidates, key=lambda c: c[0])
    return Signals(
        queue_depth_per_replica=waiting,
        kv_cache_fraction=kv_mean,
        running_per_replica=running,
        load_ratio=ratio,
        dominant=dominant,
        description=description,
    )


def _target_text(dominant: str, config: PolicyConfig) -> str:
    if dominant == "queue depth":
        return f"target {config.queue_depth_target:g}"
    if dominant == "kv cache":
        return f"target {config.kv_cache_target:.0%}"
    return f"target {config.batch_slots_target:.0%} of {config.batch_slots_per_replica} batch slots"


def _push(
    window: tuple[tuple[float, int], ...], now: float, replicas: int, config: PolicyConfig
) -> tuple[tuple[float, int], ...]:
    """Adds a recommendation to the sliding-window maximum and forgets what fell out of the window."""
    start = now - config.scale_down_delay_seconds
    kept = [(t, r) for t, r in window if t >= start and r > replicas]
    kept.append((now, replicas))
    # A count at or below the floor can never hold a scale-down back, so it needs no memory.
    return tuple((t, r) for t, r in kept if r > config.floor_replicas)


def _from_demand(
    snapshot: Snapshot, demand: Demand, config: PolicyConfig, signals: Signals
) -> tuple[Signals, int, str, bool, int]:
    """Replicas from arrivals + backlog, latency against the SLO, KV cache and batch slots: the most wins.

    Returns (signals, recommendation, reason, whether the scale-up step limit is waived, the need the
    scale-down window remembers). A demand- or
    latency-sized scale-up comes in one decision: it is measured, not extrapolated from a backlog.
    """
    current = snapshot.current_replicas
    capacity = len(snapshot.replicas) + snapshot.starting_replicas
    assert signals.load_ratio is not None
    candidates: list[tuple[int, str, bool]] = [(demand.replicas, demand.describe(), True)]
    # KV cache stays a signal of its own (long contexts fill it before anything else shows). The queue's
    # share is demand's backlog term, and the batch's is its Little's-law sizing: a batch kept full while
    # a backlog drains would otherwise hold the drain's replicas for the whole scale-down window.
    kv = signals.kv_cache_fraction
    if kv is not None:
        kv_ratio = kv * len(snapshot.replicas) / max(1, capacity) / config.kv_cache_target
        if kv_ratio > 1 + config.tolerance:
            candidates.append(
                (
                    _ceil(capacity * kv_ratio),
                    f"KV cache {kv:.0%} above target {config.kv_cache_target:.0%}",
                    False,
                )
            )
    breach = demand.latency_ratio is not None and demand.latency_ratio > 1 + config.tolerance
    queued = (
        demand.replicas_for_backlog > 0
        or demand.replicas > capacity
        or demand.backlog_requests > capacity * config.queue_depth_target
    )
    if breach and not queued and snapshot.starting_replicas == 0:
        # Latency breaks although arrivals and backlog say the fleet suffices (long prompts stalling the
        # batch, a replica slower than its model): add in proportion to the breach (at most double), once
        # per round: replicas on their way must land before latency is judged again. A breach explained by
        # a backlog is the backlog term's job; TTFT lags the queue and would ask again every interval.
        assert demand.latency_ratio is not None
        wanted = max(current + 1, _ceil(capacity * min(2.0, demand.latency_ratio)))
        candidates.append((wanted, f"{demand.latency_description} above SLO", True))
    recommended, reason, stepless = max(candidates, key=lambda c: c[0])
    # What the scale-down window remembers: the recommendation without the backlog's replicas, so replicas
    # asked for only to drain a backlog leave once it is gone. Holds (tolerance, a latency breach) are
    # remembered as they are: a fleet that just drained a backlog keeps its replicas for the next surge.
    backlog_share = demand.replicas_for_backlog if reason == demand.describe() else 0
    if abs(recommended - current) <= config.tolerance * current:
        recommended, reason = current, f"{reason}: within tolerance of {current} replicas"
    if breach and recommended < current:
        recommended, reason = current, f"{demand.latency_description} above SLO; holding"
    signals = replace(
        signals,
        load_ratio=recommended / max(1, capacity),
        dominant="latency" if breach and stepless else ("demand" if stepless else signals.dominant),
        description=reason,
        arrivals_per_second=demand.arrivals_per_second,
        replica_requests_per_second=demand.per_replica_requests_per_second,
        latency_ratio=demand.latency_ratio,
        latency_description=demand.latency_description,
    )
    return signals, recommended, reason, stepless, recommended - backlog_share


def decide(snapshot: Snapshot, config: PolicyConfig, history: History) -> Decision:
    """One autoscaling decision: fast up (bounded step), careful down (stabilization window), to zero."""
    last_burst = burst_seconds(snapshot, config, history)
    config = replace(
        config,
        scale_down_delay_seconds=hold_seconds(config, snapshot.demand, snapshot.now_seconds, last_burst),
    )
    now, current = snapshot.now_seconds, snapshot.current_replicas
    window = history.recommendations
    last_active = history.last_active_seconds
    raised_outside = history.raised_outside_seconds
    notes: list[str] = []

    # Someone else (kubectl scale, the gateway waking the model) raised spec.replicas: respect that like
    # one of our own recommendations, so it is not undone before the window or the idle period passes.
    if history.last_desired_replicas is not None and current > history.last_desired_replicas:
        window = _push(window, now, current, config)
        last_active = raised_outside = now
        notes.append(f"replicas raised to {current} from outside the autoscaler")

    if snapshot.demand is not None:
        window = hold_newly_ready(
            window, now, snapshot.ready_replicas, history.last_ready_replicas, config.floor_replicas
        )

    signals = observe(snapshot, config)
    scraped, unscraped = len(snapshot.replicas), snapshot.unscraped_replicas
    active = (
        unscraped > 0
        or snapshot.gateway_waiting_requests > 0
        or any(r.requests_waiting > 0 or r.requests_running > 0 for r in snapshot.replicas)
    )
    if active or last_active is None:
        last_active = now

    def finish(
        desired: int,
        recommended: int,
        reason: str,
        limited_by: Limit | None = None,
        stabilized: bool = False,
        no_data: bool = False,
        scaled_to_zero: bool = False,
    ) -> Decision:
        return Decision(
            desired_replicas=desired,
            recommended_replicas=recommended,
            reason=reason,
            signals=signals,
            history=History(
                window,
                last_active,
                desired,
                raised_outside_seconds=raised_outside,
                last_burst_seconds=last_burst,
                last_ready_replicas=snapshot.ready_replicas,
            ),
            limited_by=limited_by,
            stabilized=stabilized,
            partial_data=unscraped > 0 and scraped > 0,
            no_data=no_data,
            scaled_to_zero=scaled_to_zero,
            notes=tuple(notes),
        )

    # Bounds changed under us: clamp at once, whatever the load says.
    if current > config.max_replicas:
        return finish(
            config.max_replicas, config.max_replicas, f"clamped to maxReplicas {config.max_replicas}"
        )
    if current < config.min_replicas:
        return finish(
            config.min_replicas, config.min_replicas, f"raised to minReplicas {config.min_replicas}"
        )

    if current == 0:
        # Waking from zero is the gateway's job (it holds the request); the autoscaler never fights it.
        return finish(
            0, 0, "scaled to zero; a request through the gateway wakes the model", scaled_to_zero=True
        )

    idle_seconds = now - last_active
    idle = not active and not snapshot.gateway_unread  # unread gateway: callers may be waiting there
    if config.min_replicas == 0 and idle and idle_seconds >= config.scale_to_zero_idle_seconds:
        window = ()
        reason = f"idle for {idle_seconds:.0f}s with no request running or waiting"
        return finish(0, 0, reason, scaled_to_zero=True)

    if scraped == 0:
        # Nothing to go on: replicas are all starting, or none could be scraped. Hold.
        reason = "no replica's metrics could be read" if unscraped else "waiting for replicas to become ready"
        window = _push(window, now, current, config)
        return finish(current, current, reason, no_data=unscraped > 0)

    load_ratio = signals.load_ratio
    assert load_ratio is not None
    capacity = scraped + snapshot.starting_replicas
    stepless = False
    remembered: int | None = None  # what enters the scale-down window, when not the recommendation itself
    if snapshot.demand is not None:
        signals, recommended, reason, stepless, remembered = _from_demand(
            snapshot, snapshot.demand, config, signals
        )
    elif abs(load_ratio - 1.0) <= config.tolerance:
        recommended = current
        reason = f"{signals.description} within tolerance of {_target_text(signals.dominant, config)}"
    else:
        # Unscraped replicas keep their share: they are never counted as idle.
        recommended = _ceil(capacity * load_ratio) + unscraped
        side = "above" if load_ratio > 1 else "below"
        reason = f"{signals.description} {side} {_target_text(signals.dominant, config)}"
    if unscraped and recommended < current:
        recommended = current
        reason = f"{unscraped} replica(s) could not be scraped; holding instead of scaling down"
    if snapshot.gateway_unread and recommended < current:
        recommended = current
        reason = "the gateway's held requests could not be read; holding instead of scaling down"

    limited_by: Limit | None = None
    if recommended > config.max_replicas:
        recommended, limited_by = config.max_replicas, "max"
    elif recommended < config.floor_replicas:
        recommended = config.floor_replicas
        limited_by = "min" if recommended == config.min_replicas and recommended < current else None

    window = _push(
        window, now, recommended if remembered is None else max(config.floor_replicas, remembered), config
    )
    stabilized = False
    if recommended > current:
        desired = recommended if stepless else min(recommended, current + config.scale_up_max_step)
        if desired < recommended:
            limited_by = "step"
    elif recommended < current:
        held = max([recommended, *(r for _, r in window)])
        highest, cancel_after = held, None
        outside_held = raised_outside is not None and now - raised_outside < config.scale_down_delay_seconds
        if (
            snapshot.demand is not None
            and snapshot.demand.falling
            and snapshot.demand.replicas_for_backlog == 0
            and held > snapshot.ready_replicas
            and not outside_held
            and not burst_held(config, now, last_burst)
        ):
            # The window holds ready replicas; starting ones stay only while a recent recommendation wants
            # them (the sliding-window maximum answers "the highest since t" for any t inside the window).
            cancel_after = CANCEL_AFTER_SECONDS
            recent = max([recommended, *(r for t, r in window if t >= now - cancel_after)])
            highest = max(recent, min(held, snapshot.ready_replicas))
        desired = min(current, highest)
        stabilized = desired > recommended
        if stabilized:
            reason += f"; holding {desired} (highest recommendation in the last {config.scale_down_delay_seconds:g}s"
            reason += ", held that long after a burst)" if burst_held(config, now, last_burst) else ")"
        cancelled = min(current, held) - desired
        if cancelled > 0 and cancel_after is not None:
            reason += (
                f"; cancelling {cancelled} starting replica(s) not asked for in the last {cancel_after:g}s"
            )
    else:
        desired = current
    if desired > snapshot.ready_replicas + snapshot.starting_replicas and snapshot.unschedulable_replicas:
        limited_by = "capacity"
    return finish(desired, recommended, reason, limited_by=limited_by, stabilized=stabilized)
