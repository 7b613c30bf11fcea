"""The gateway's waiting requests as one more in-flight term of the demand window: its growth is arrivals."""

from __future__ import annotations

import pytest

from llmserve.autoscale.policy import PolicyConfig, ReplicaMetrics
from llmserve.autoscale.window import EngineCounters, SignalWindow

T0 = 1_700_000_000.0
Fleet = dict[str, tuple[EngineCounters, float, float]]


def engine(finished: float, in_flight: float, running: float = 8.0) -> tuple[EngineCounters, float, float]:
    return EngineCounters(finished, finished * 1000, finished * 100), in_flight, running


def arrivals(window: SignalWindow, now: float, span: float = 60.0) -> float:
    rates = window.rates(now, span)
    assert rates is not None
    return rates.arrivals_per_second * rates.span_seconds


def test_a_crowd_held_in_the_gateway_while_every_batch_is_full_counts_as_arrivals() -> None:
    window = SignalWindow()
    full: Fleet = {"pod-0": engine(0, 8)}  # batch full, nothing finishes: the engines see no change
    for step, held in enumerate([0, 40, 100]):
        window.observe(T0 + 10 * step, full, held)
    assert arrivals(window, T0 + 20) == pytest.approx(100)
    without = SignalWindow()
    for step in range(3):
        without.observe(T0 + 10 * step, full)
    assert arrivals(without, T0 + 20) == 0  # what the window saw before: no arrivals at all


def test_a_held_request_dispatched_to_a_replica_with_a_baseline_is_counted_once() -> None:
    window = SignalWindow()
    window.observe(T0, {"pod-0": engine(0, 8)}, 0)
    window.observe(T0 + 10, {"pod-0": engine(0, 8)}, 30)  # 30 arrive and wait in the gateway
    window.observe(T0 + 20, {"pod-0": engine(0, 38)}, 0)  # ... then go to the engine's queue
    window.observe(T0 + 30, {"pod-0": engine(38, 0)}, 0)  # ... and finish
    assert arrivals(window, T0 + 30) == pytest.approx(30)


def test_held_requests_dispatched_to_a_first_seen_replica_do_not_vanish() -> None:
    window = SignalWindow()
    window.observe(T0, {}, 0)  # a model at zero
    window.observe(T0 + 10, {}, 30)  # 30 held for the first replica
    # The replica is ready: the 30 held and 10 fresh requests are on it at its first scrape.
    # The 30 are counted once (the 10 fresh ones fall in the replica's baseline, as any replica's first
    # scrape does): without the matching, the gateway's fall of 30 would cancel them.
    window.observe(T0 + 20, {"pod-0": engine(0, 40)}, 0)
    assert arrivals(window, T0 + 20) == pytest.approx(30)
    assert arrivals(window, T0 + 20, span=10) == 0
    window.observe(T0 + 30, {"pod-0": engine(40, 0)}, 0)  # all finish: no more arrivals
    assert arrivals(window, T0 + 30) == pytest.approx(30)


def test_an_unread_gateway_holds_its_last_value_instead_of_reading_as_a_fall() -> None:
    window = SignalWindow()
    full: Fleet = {"pod-0": engine(0, 8)}
    window.observe(T0, full, 0)
    window.observe(T0 + 10, full, 40)
    window.observe(T0 + 20, full, None)  # the gateway could not be read
    assert arrivals(window, T0 + 20, span=10) == 0  # no change that interval, not -40
    window.observe(T0 + 30, full, 70)  # the change since the last reading: 30 more
    assert arrivals(window, T0 + 30) == pytest.approx(70)


def test_a_gateway_unread_from_the_start_sets_no_baseline_until_it_is_read() -> None:
    window = SignalWindow()
    full: Fleet = {"pod-0": engine(0, 8)}
    window.observe(T0, full, None)
    window.observe(T0 + 10, full, 50)  # the first reading is a baseline, like a replica's first scrape
    window.observe(T0 + 20, full, 60)
    assert arrivals(window, T0 + 20) == pytest.approx(10)


def test_the_operator_s_tracker_passes_the_gateway_term_and_holds_it_when_the_gateway_is_unread() -> None:
    from llmserve.api.llmserve import LLMServeSpec
    from llmserve.autoscale.demand_spec import DemandTracker

    slo = {"timeToFirstTokenSeconds": 1, "interTokenLatencySeconds": 0.05, "percentile": 90}
    spec = LLMServeSpec.model_validate(
        {"model": {"name": "m"}, "engine": {"kind": "simulator", "args": ["--max-num-seqs=8"]},
         "autoscaling": {"slo": slo}}
    )  # fmt: skip
    config = PolicyConfig(min_replicas=1, max_replicas=10, batch_slots_per_replica=8)
    full = {"pod-0": ReplicaMetrics(0, 8, 0.3, EngineCounters(0, 0, 0))}

    def arrived(readings: list[tuple[float, bool]]) -> float:
        tracker = DemandTracker()
        for step, (held, unread) in enumerate(readings):
            tracker.estimate(
                spec, config, full, [], T0 + 10 * step, 1, gateway_requests=held, gateway_unread=unread
            )
        assert tracker.model is not None
        return arrivals(tracker.model.window, T0 + 10 * (len(readings) - 1))

    assert arrived([(0, False), (50, False), (100, False)]) == pytest.approx(100)
    # The daemon passes 0 with gateway_unread when the listing failed: held, not a fall of 100.
    assert arrived([(0, False), (100, False), (0, True)]) == pytest.approx(100)
