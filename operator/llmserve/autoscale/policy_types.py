"""What the scaling policy reads and returns: the snapshot, its configuration, history and decision (pure data).

`policy.decide` is the algorithm; these types are shared with the operator's collection and status code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmserve.autoscale.window import EngineCounters

if TYPE_CHECKING:
    from llmserve.autoscale.demand import Demand

Limit = Literal["max", "min", "step", "capacity"]


@dataclass(frozen=True)
class ReplicaMetrics:
    """One ready replica's engine signals, as read from its /metrics."""

    requests_waiting: float
    requests_running: float
    kv_cache_fraction: float | None = None  # None when the engine exports no KV-cache metric
    counters: EngineCounters | None = None  # cumulative counters and latency histograms (autoscaling.slo)


@dataclass(frozen=True)
class Snapshot:
    """Everything the policy may look at for one decision."""

    now_seconds: float  # wall-clock (epoch) seconds, so history stays meaningful across restarts
    current_replicas: int  # spec.replicas: the desired count in force
    ready_replicas: int
    unschedulable_replicas: int = 0
    replicas: tuple[ReplicaMetrics, ...] = ()  # one entry per ready replica that was scraped
    unscraped_replicas: int = 0  # ready replicas whose metrics could not be read
    # Arrivals, the replica model and latency against the SLO (autoscaling.slo set and two scrapes seen).
    demand: Demand | None = None
    # Requests held (model at zero) or queued (--queue-when-full) in the gateway for this LLMServe: waiting
    # like the engines' queue, but no engine counts them. `gateway_unread`: the gateway could not (all) be
    # read, so the count is a lower bound: never a reason to scale down.
    gateway_waiting_requests: float = 0.0
    gateway_unread: bool = False

    @property
    def starting_replicas(self) -> int:
        """Asked-for replicas that are neither ready nor stuck for lack of a node: capacity on the way."""
        return max(0, self.current_replicas - self.ready_replicas - self.unschedulable_replicas)


@dataclass(frozen=True)
class PolicyConfig:
    """The LLMServe's autoscaling settings, in plain values."""

    min_replicas: int
    max_replicas: int
    queue_depth_target: float = 4.0
    kv_cache_target: float = 0.8
    tolerance: float = 0.1
    scale_up_max_step: int = 4
    scale_down_delay_seconds: float = 300.0
    scale_to_zero_idle_seconds: float = 600.0
    # The engine's max_num_seqs. A full running batch is a load ratio of 1: it keeps a busy fleet from
    # shrinking when neither queue nor KV cache shows pressure (short prompts, small batches).
    batch_slots_per_replica: int | None = None
    # Share of the batch slots a replica should fill on average; the rest is headroom for bursts that
    # arrive while new replicas are still loading the model.
    batch_slots_target: float = 1.0

    @property
    def floor_replicas(self) -> int:
        """Lowest count the load-following path goes to; only the idle path reaches zero."""
        return max(self.min_replicas, 1)


@dataclass(frozen=True)
class History:
    """What the policy remembers between decisions (the operator persists it across restarts)."""

    # (time, replicas) inside the stabilization window, oldest first. Kept as a "sliding-window maximum":
    # replica counts strictly decrease from oldest to newest, because an older, lower recommendation can
    # never be the window's highest again once a newer, higher one exists.
    recommendations: tuple[tuple[float, int], ...] = ()
    last_active_seconds: float | None = None
    last_desired_replicas: int | None = None
    # When spec.replicas was last raised from outside (kubectl scale, the gateway waking the model): replicas
    # someone else asked for are held for the whole window, starting or not.
    raised_outside_seconds: float | None = None
    # When demand last jumped past the fleet (a panic that asked for more replicas): the full
    # scaleDownDelaySeconds holds from then on (burst_held).
    last_burst_seconds: float | None = None
    # The ready replicas at the last decision, so that replicas that became ready since are held
    # (hold.hold_newly_ready). Not persisted: a restarted operator starts counting at its first decision.
    last_ready_replicas: int | None = None


@dataclass(frozen=True)
class Signals:
    """The observed load, averaged over the replicas that are ready or on the way."""

    queue_depth_per_replica: float | None = None
    kv_cache_fraction: float | None = None  # mean over scraped replicas (what users see)
    running_per_replica: float | None = None
    load_ratio: float | None = None  # the strongest signal over its target; 1.0 means on target
    dominant: str = ""  # which signal set load_ratio
    description: str = ""  # e.g. "queue depth 9.5/replica" with its target
    arrivals_per_second: float | None = None  # from the engines' counters (autoscaling.slo set)
    replica_requests_per_second: float | None = None  # one replica's rate within the SLO at this mix
    latency_ratio: float | None = None  # worst latency quantile over its SLO target
    latency_description: str = ""


@dataclass(frozen=True)
class Decision:
    """The policy's answer, with enough detail to explain it in an Event, status and conditions."""

    desired_replicas: int
    recommended_replicas: int  # the load's recommendation after min/max clamps, before step and window
    reason: str
    signals: Signals
    history: History
    limited_by: Limit | None = None
    stabilized: bool = False  # a scale-down was held back by a higher recommendation in the window
    partial_data: bool = False
    no_data: bool = False
    scaled_to_zero: bool = False
    notes: tuple[str, ...] = ()
