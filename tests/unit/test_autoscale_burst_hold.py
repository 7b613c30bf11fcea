"""The burst hold: after demand jumps past the fleet, its replicas are held for scaleDownDelaySeconds.

Recorded metric sequences through the same DemandModel and `decide` the operator runs, clock injected (one
scrape every 5 s); replicas become ready as soon as they are asked for, so only the hold is under test.
"""

from __future__ import annotations

import math

from llmserve.autoscale.demand import DemandModel
from llmserve.autoscale.policy import (
    Decision,
    History,
    ReplicaMetrics,
    Snapshot,
    decide,
)
from llmserve.autoscale.state import history_from_status, scale_status
from tests.unit.test_autoscale_demand import CONFIG, INTERVAL, SLO, STEADY, T0, Engines, replica_model

BASE = dict(STEADY, arrivals_per_second=8.0)
CROWD = dict(STEADY, arrivals_per_second=48.0)  # 6x within one interval, as a flash crowd comes


class Fleet:
    """A DemandModel and a policy history over engines whose traffic is spread over a fixed set of pods."""

    def __init__(self, startup_seconds: float = 60.0) -> None:
        self.model = DemandModel(replica_model(), SLO)
        self.engines = Engines(4)
        self.history = History(last_desired_replicas=2)
        self.current = 2
        self.now = T0
        self.startup_seconds = startup_seconds

    def run(self, seconds: float, load: dict[str, float], running: float = 20.0) -> list[Decision]:
        decisions = []
        end = self.now + seconds
        while self.now < end:
            self.now += INTERVAL
            self.model.observe(self.now, self.engines.advance(**load))
            demand = self.model.estimate(self.now, self.current, self.current, 0.0, self.startup_seconds, 0.8)
            replicas = tuple(ReplicaMetrics(0, running, 0.4) for _ in range(self.current))
            snapshot = Snapshot(self.now, self.current, self.current, 0, replicas, demand=demand)
            decision = decide(snapshot, CONFIG, self.history)
            self.history, self.current = decision.history, decision.desired_replicas
            decisions.append(decision)
        return decisions


def test_a_crowd_that_returns_within_the_scale_down_delay_finds_its_replicas() -> None:
    # 60 s start-ups: without a burst the hold is 120 s (one start-up, at least two minutes). A crowd that
    # ended 200 s ago would have lost its replicas; after a jump the full scaleDownDelaySeconds (300 s)
    # holds what the crowd's arrivals needed.
    fleet = Fleet(startup_seconds=60.0)
    fleet.run(120, BASE)
    assert fleet.current == 2
    started = fleet.now
    crowd = fleet.run(80, CROWD)
    assert any(d.reason.startswith("panic: ") for d in crowd)
    assert fleet.history.last_burst_seconds is not None
    assert started < fleet.history.last_burst_seconds <= started + 15
    peak = fleet.current
    per_replica = crowd[-1].signals.replica_requests_per_second
    assert per_replica is not None and peak >= math.ceil(48.0 / per_replica)
    quiet = fleet.run(200, BASE, running=8)
    assert fleet.current == peak
    assert quiet[-1].stabilized and "held that long after a burst" in quiet[-1].reason
    # The crowd comes again: every replica it needs is there, none has to start.
    again = fleet.run(30, CROWD)
    assert min(d.desired_replicas for d in again) >= peak


def test_the_burst_hold_ends_scale_down_delay_after_the_episode_began() -> None:
    fleet = Fleet(startup_seconds=60.0)
    fleet.run(120, BASE)
    fleet.run(80, CROWD)
    burst = fleet.history.last_burst_seconds
    assert burst is not None
    peak = fleet.current
    fleet.run(burst + CONFIG.scale_down_delay_seconds - fleet.now - 10, BASE, running=8)
    assert fleet.current == peak
    fleet.run(20, BASE, running=8)
    # Past 300 s from the first jump the one-start-up hold is in force again, and it ran out long ago.
    assert fleet.current < peak


def test_jumps_within_the_episode_do_not_extend_it() -> None:
    # The longer hold costs at most one scaleDownDelaySeconds per episode: a second crowd inside it is
    # served by the held replicas and does not restart the clock.
    fleet = Fleet(startup_seconds=60.0)
    fleet.run(120, BASE)
    fleet.run(80, CROWD)
    first = fleet.history.last_burst_seconds
    fleet.run(100, BASE, running=8)
    fleet.run(60, CROWD)
    assert fleet.history.last_burst_seconds == first


def test_a_gradual_rise_is_no_burst() -> None:
    # A ramp the trend term buys ahead of keeps the short (one start-up) hold: re-buying it is cheap.
    fleet = Fleet(startup_seconds=60.0)
    fleet.run(120, BASE)
    for rate in range(9, 25):
        fleet.run(15, dict(STEADY, arrivals_per_second=float(rate)))
    assert fleet.history.last_burst_seconds is None


def test_the_burst_survives_a_round_trip_through_status() -> None:
    fleet = Fleet(startup_seconds=60.0)
    fleet.run(120, BASE)
    decision = fleet.run(20, CROWD)[-1]
    status = scale_status(decision, 2, None, None).model_dump(by_alias=True, mode="json")
    assert status["lastBurstTime"]
    restored = history_from_status(status)  # what a restarted operator reads back
    assert restored.last_burst_seconds == int(decision.history.last_burst_seconds or 0)
