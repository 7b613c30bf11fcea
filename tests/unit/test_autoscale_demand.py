"""SLO-aware sizing on recorded metric sequences: latency breaches, flash crowds, backlog, careful scale-down.

Every sequence is a list of scrapes fed through the same DemandModel and `decide` the operator runs, with the
clock injected (one scrape every 5 s).
"""

from __future__ import annotations

import math

import pytest

from llmserve.autoscale.demand import DemandModel, DemandSettings
from llmserve.autoscale.histogram import Histogram
from llmserve.autoscale.policy import Decision, History, PolicyConfig, ReplicaMetrics, Snapshot, decide
from llmserve.autoscale.replica_model import ReplicaModel, SloTargets
from llmserve.autoscale.window import EngineCounters
from llmserve.sim.metrics import PER_TOKEN_BUCKETS, TTFT_BUCKETS
from llmserve.sim.profiles import resolve_profile

SLO = SloTargets(time_to_first_token_seconds=1.0, inter_token_latency_seconds=0.05, quantile=0.9)
CONFIG = PolicyConfig(min_replicas=1, max_replicas=64, batch_slots_per_replica=32, batch_slots_target=0.8)
T0 = 1_700_000_000.0
INTERVAL = 5.0


def replica_model() -> ReplicaModel:
    profile = resolve_profile("NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-70B-Instruct", 4)
    return ReplicaModel.from_profile(profile, 32)


class Engines:
    """A fleet's cumulative counters, advanced one interval at a time at a given load and latency."""

    def __init__(self, replicas: int) -> None:
        empty = (Histogram.empty(TTFT_BUCKETS), Histogram.empty(PER_TOKEN_BUCKETS))
        self.state = {f"pod-{i}": [0.0, 0.0, 0.0, *empty] for i in range(replicas)}

    def advance(
        self, arrivals_per_second: float, prompt: int, output: int, ttft: float, itl: float
    ) -> dict[str, tuple[EngineCounters, float, float]]:
        per_pod = arrivals_per_second * INTERVAL / len(self.state)
        out = {}
        for pod, s in self.state.items():
            s[0] += per_pod
            s[1] += per_pod * prompt
            s[2] += per_pod * output
            s[3] = s[3].plus(Histogram.of(TTFT_BUCKETS, [ttft] * round(per_pod)))
            s[4] = s[4].plus(Histogram.of(PER_TOKEN_BUCKETS, [itl] * round(per_pod * output)))
            counters = EngineCounters(s[0], s[1], s[2], s[3], s[4])
            out[pod] = (counters, 20.0, 20.0)
        return out


def run(
    model: DemandModel,
    engines: Engines,
    seconds: float,
    start: float,
    current: int,
    history: History,
    load: dict[str, float],
    waiting: float = 0.0,
    kv: float = 0.4,
    running: float = 20.0,
    startup: float = 60.0,
) -> tuple[Decision, float, History]:
    """Scrapes every 5 s for `seconds`, deciding each time; replicas follow the decisions at once, but the
    engines' traffic stays spread over the pods `engines` simulates."""
    decision = None
    now = start
    while now < start + seconds:
        now += INTERVAL
        model.observe(now, engines.advance(**load))
        demand = model.estimate(now, current, len(engines.state), waiting * current, startup, 0.8)
        replicas = tuple(ReplicaMetrics(waiting, running, kv) for _ in range(len(engines.state)))
        snapshot = Snapshot(now, current, len(engines.state), 0, replicas, demand=demand)
        decision = decide(snapshot, CONFIG, history)
        history, current = decision.history, decision.desired_replicas
    assert decision is not None
    return decision, now, history


STEADY = {"arrivals_per_second": 6.0, "prompt": 1000, "output": 150, "ttft": 0.2, "itl": 0.03}


def test_per_replica_rate_comes_from_the_profile_and_shrinks_with_long_prompts() -> None:
    m = replica_model()
    short = m.requests_per_second(1000, 150, SLO, 0.8)
    long = m.requests_per_second(6000, 150, SLO, 0.8)
    assert 2.0 < short < 10.0
    # A 6k-token prefill costs ~6x the compute: what a replica serves within the ITL target falls with it.
    assert long < short / 3


def test_scales_up_on_inter_token_latency_when_queue_and_kv_look_fine() -> None:
    # Learning off: the replica model cannot explain the breach, so only the latency signal can act on it.
    model = DemandModel(replica_model(), SLO, DemandSettings(correction_smoothing=0.0))
    engines = Engines(3)
    history = History(last_desired_replicas=3)
    # No queue, KV 40%, arrivals that the model thinks 3 replicas serve: but ITL is 4x the target
    load = {"arrivals_per_second": 1.5, "prompt": 1000, "output": 150, "ttft": 0.3, "itl": 0.2}
    decision, _, _ = run(model, engines, 60, T0, 3, history, load)
    assert decision.desired_replicas == 6
    assert decision.reason.startswith("ITL p90")
    assert "above SLO" in decision.reason
    assert decision.signals.latency_ratio is not None and decision.signals.latency_ratio > 2


def test_a_flash_crowd_gets_its_replicas_in_one_decision() -> None:
    model = DemandModel(replica_model(), SLO)
    engines = Engines(2)
    steady_load = dict(STEADY, arrivals_per_second=8.0)
    decision, now, history = run(model, engines, 120, T0, 2, History(last_desired_replicas=2), steady_load)
    assert decision.desired_replicas == 2
    # 6x within one interval: the short window panics and sizes for the new rate at once, past the step limit
    crowd = dict(STEADY, arrivals_per_second=48.0)
    model.observe(now + INTERVAL, engines.advance(**crowd))
    model.observe(now + 2 * INTERVAL, engines.advance(**crowd))
    demand = model.estimate(now + 2 * INTERVAL, 2, 2, 0.0, 60.0, 0.8)
    assert demand is not None and demand.panic
    snapshot = Snapshot(now + 2 * INTERVAL, 2, 2, 0, (ReplicaMetrics(0, 32, 0.5),) * 2, demand=demand)
    decision = decide(snapshot, CONFIG, history)
    expected = demand.replicas
    assert expected > 2 + CONFIG.scale_up_max_step
    assert decision.desired_replicas == expected
    assert decision.reason.startswith("panic: ")


def test_a_backlog_the_fleet_drains_before_new_replicas_could_start_asks_for_nothing_extra() -> None:
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    for step in range(1, 13):
        model.observe(T0 + step * INTERVAL, engines.advance(**STEADY))
    now = T0 + 12 * INTERVAL
    small = model.estimate(now, 4, 4, backlog_requests=20, startup_seconds=60.0, batch_fill=0.8)
    large = model.estimate(now, 4, 4, backlog_requests=3000, startup_seconds=60.0, batch_fill=0.8)
    assert small is not None and small.replicas_for_backlog == 0
    assert large is not None and large.replicas_for_backlog > 0
    # What one replica clears within the clearance time bounds the ask; never one replica per waiting request.
    assert large.replicas_for_backlog < 3000 / 8
    # With a longer start-up the fleet's spare capacity drains more before help arrives: fewer asked.
    fast = model.estimate(now, 4, 4, backlog_requests=400, startup_seconds=60.0, batch_fill=0.8)
    slow = model.estimate(now, 4, 4, backlog_requests=400, startup_seconds=300.0, batch_fill=0.8)
    assert fast is not None and slow is not None
    assert slow.replicas_for_backlog < fast.replicas_for_backlog


def test_a_backlog_is_drained_only_by_the_replicas_the_arrivals_keep() -> None:
    # Eight ready replicas, arrivals that need two: the other six leave with the scale-down, so they drain
    # nothing. Counting their spare capacity let a crowd's queue outlast the fleet that was cut under it.
    model = DemandModel(replica_model(), SLO)
    engines = Engines(8)
    for step in range(1, 13):
        model.observe(T0 + step * INTERVAL, engines.advance(**STEADY))
    now = T0 + 12 * INTERVAL
    demand = model.estimate(now, 8, 8, backlog_requests=400, startup_seconds=60.0, batch_fill=0.8)
    assert demand is not None and math.ceil(demand.replicas_for_arrivals) == 2
    assert demand.replicas_for_backlog > 0
    assert demand.replicas > math.ceil(demand.replicas_for_arrivals)


@pytest.mark.parametrize(("startup", "hold"), [(60.0, 120.0), (180.0, 180.0), (300.0, 300.0)])
def test_scale_down_after_a_crowd_waits_one_start_up_at_least_two_minutes_at_most_the_stabilization_window(
    startup: float, hold: float
) -> None:
    # Replicas that start in 60 s are held 120 s (two of the model's 60 s windows); in 180 s, 180 s (not
    # the 360 s of two start-ups); in 300 s, the whole scaleDownDelaySeconds (300 s).
    assert CONFIG.scale_down_delay_seconds == 300
    model = DemandModel(replica_model(), SLO)
    engines = Engines(8)
    history = History(last_desired_replicas=8)
    busy = dict(STEADY, arrivals_per_second=30.0)
    decision, now, history = run(model, engines, 120, T0, 8, history, busy, startup=startup)
    high = decision.desired_replicas
    quiet = dict(STEADY, arrivals_per_second=3.0)
    decision, now, history = run(
        model, engines, hold - 20, now, high, history, quiet, running=3, startup=startup
    )
    assert decision.desired_replicas == high and decision.stabilized
    decision, _, _ = run(model, engines, 40, now, high, history, quiet, running=3, startup=startup)
    assert decision.desired_replicas < high


def test_a_breach_explained_by_a_backlog_is_left_to_the_backlog_term() -> None:
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    load = dict(STEADY, ttft=8.0)
    # TTFT far above target, but 40 requests wait per replica: a first token reports a wait that began when
    # the queue formed, so TTFT is the backlog's echo and is left out, and so is ITL (replicas draining a
    # queue prefill back to back); no doubling
    _, now, history = run(model, engines, 60, T0, 4, History(last_desired_replicas=4), STEADY)
    decision, now, history = run(model, engines, 30, now, 4, history, load, waiting=40)
    assert decision.signals.latency_ratio is None
    assert decision.desired_replicas == 4
    # Once the window no longer covers the backlog, latency is compared again.
    decision, _, _ = run(model, engines, 20, now, 4, history, STEADY)
    assert decision.signals.latency_description.startswith(("TTFT p90", "ITL p90"))


def test_an_itl_breach_while_a_backlog_drains_is_not_scaled_on_until_it_is_gone() -> None:
    # ITL at 4x its target: with a backlog just drained it is the drain's prefills stalling decoding and
    # asks for nothing; the same breach without a backlog doubles the fleet.
    breach = dict(STEADY, arrivals_per_second=1.5, itl=0.2)
    model = DemandModel(replica_model(), SLO, DemandSettings(correction_smoothing=0.0))
    engines = Engines(3)
    _, now, history = run(model, engines, 60, T0, 3, History(last_desired_replicas=3), breach, waiting=10)
    decision, _, _ = run(model, engines, 10, now, 3, history, breach)
    assert decision.desired_replicas == 3 and decision.signals.latency_ratio is None
    decision, _, _ = run(model, engines, 60, now + 10, 3, history, breach)
    assert decision.desired_replicas == 6 and decision.reason.startswith("ITL p90")


def test_replica_model_learns_slower_decode_steps_from_observed_itl() -> None:
    model = DemandModel(replica_model(), SLO)
    engines = Engines(2)
    before = model.model.requests_per_second(1000, 150, SLO, 0.8)
    slow = dict(STEADY, itl=0.045)
    run(model, engines, 120, T0, 2, History(last_desired_replicas=2), slow)
    assert model.step_correction > 1.5
    assert model.model.requests_per_second(1000, 150, SLO, 0.8) < before
    assert "as observed" in model.model.source


@pytest.mark.parametrize("percentile", [0.5, 0.99])
def test_the_slo_percentile_decides_which_latency_is_compared(percentile: float) -> None:
    model = DemandModel(replica_model(), SloTargets(1.0, 0.05, percentile))
    engines = Engines(2)
    # 80% of first tokens at 0.2 s, 20% at 5 s: p50 meets the target, p99 does not (no backlog: not an echo)
    for step in range(1, 7):
        model.observe(T0 + step * INTERVAL, engines.advance(6.0, 1000, 150, 0.2, 0.03))
        model.observe(T0 + step * INTERVAL + 2.5, engines.advance(1.5, 1000, 150, 5.0, 0.03))
    demand = model.estimate(T0 + 32.5, 2, 2, 0.0, 60.0, 0.8)
    assert demand is not None and demand.latency_ratio is not None
    assert (demand.latency_ratio > 1) == (percentile == 0.99)


def test_a_deep_backlog_asks_for_no_more_replicas_than_the_arrivals_do() -> None:
    # Queued requests stay in their engine; new replicas only take arrivals off those replicas, so past
    # the arrivals' own count they would sit idle until the backlog is gone.
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    for step in range(1, 13):
        model.observe(T0 + step * INTERVAL, engines.advance(**STEADY))
    now = T0 + 12 * INTERVAL
    deep = model.estimate(now, 4, 4, backlog_requests=20000, startup_seconds=300.0, batch_fill=0.8)
    assert deep is not None
    assert deep.replicas_for_backlog == math.ceil(deep.replicas_for_arrivals - 1e-9)
    assert deep.replicas <= 2 * math.ceil(deep.replicas_for_arrivals)


def test_a_ramp_is_sized_for_where_it_will_be_one_start_up_later_and_a_flat_rate_is_not() -> None:
    flat, ramp = DemandModel(replica_model(), SLO), DemandModel(replica_model(), SLO)
    flat_engines, ramp_engines = Engines(4), Engines(4)
    for step in range(1, 19):  # 90 s: the flat fleet at 10 req/s, the other rising by 1 req/s every 5 s
        now = T0 + step * INTERVAL
        flat.observe(now, flat_engines.advance(**dict(STEADY, arrivals_per_second=10.0)))
        ramp.observe(now, ramp_engines.advance(**dict(STEADY, arrivals_per_second=10.0 + 1.0 * step)))
    steady = flat.estimate(now, 4, 4, backlog_requests=0, startup_seconds=180.0, batch_fill=0.8)
    rising = ramp.estimate(now, 4, 4, backlog_requests=0, startup_seconds=180.0, batch_fill=0.8)
    assert steady is not None and not steady.rising and steady.arrivals_per_second == pytest.approx(10.0)
    assert rising is not None and rising.rising and not rising.panic
    # 27 req/s over the last 15 s, 22.5 over the last minute (a rise of 0.2 req/s each second, well above
    # the noise of a 15 s count): 63 req/s in 180 s, capped at twice the short window's 27.
    assert rising.arrivals_per_second == pytest.approx(2 * 27.0)
    assert rising.describe().startswith("rising: ")


def test_a_step_that_has_levelled_off_is_sized_for_its_level_not_extrapolated() -> None:
    # 40 req/s for a minute, then 80 req/s for the last 35 s: to the two windows (80 over 15 s, 63 over the
    # minute) this looks like a ramp, but the 15 s before the last rose by nothing. A step's replicas are
    # bought for its level; extrapolating it bought 2x (160 req/s) and held them for the scale-down window.
    step, ramp = DemandModel(replica_model(), SLO), DemandModel(replica_model(), SLO)
    step_engines, ramp_engines = Engines(16), Engines(16)
    for tick in range(1, 20):
        now = T0 + tick * INTERVAL
        step.observe(
            now, step_engines.advance(**dict(STEADY, arrivals_per_second=40.0 if tick <= 12 else 80.0))
        )
        ramp.observe(now, ramp_engines.advance(**dict(STEADY, arrivals_per_second=40.0 + 2.0 * tick)))
    levelled = step.estimate(now, 16, 16, backlog_requests=0, startup_seconds=180.0, batch_fill=0.8)
    assert levelled is not None and not levelled.panic and levelled.rising
    assert levelled.arrivals_per_second == pytest.approx(80.0)
    # A ramp keeps rising through the last short window: still sized one start-up ahead.
    rising = ramp.estimate(now, 16, 16, backlog_requests=0, startup_seconds=180.0, batch_fill=0.8)
    assert rising is not None and rising.rising
    assert rising.arrivals_per_second > 1.5 * 76.0
    # Once judged a step, the rise stays one until it is over: a noisy 15 s (95 req/s) that would pass for
    # a ramp on its own must not extrapolate again (that flip cancelled starting replicas, then re-bought them).
    later = now + INTERVAL
    step.observe(later, step_engines.advance(**dict(STEADY, arrivals_per_second=95.0)))
    still = step.estimate(later, 16, 16, backlog_requests=0, startup_seconds=180.0, batch_fill=0.8)
    assert still is not None and still.arrivals_per_second == pytest.approx(85.0)
    fresh = DemandModel(replica_model(), SLO)
    fresh.window, fresh.stepped = step.window, False
    assert fresh.estimate(later, 16, 16, 0, 180.0, 0.8).arrivals_per_second > 1.5 * 85.0  # type: ignore[union-attr]


def test_a_ramp_the_ready_fleet_still_serves_asks_for_no_backlog_replicas() -> None:
    # Arrivals rising to 27 req/s over the last 15 s (22.5 over the minute): the ramp is sized for 54 req/s
    # one start-up ahead. Ten ready replicas serve what arrives now, so no backlog builds while help
    # starts: asking for backlog replicas on top of the ramp's would buy the ramp twice.
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    for step in range(1, 19):
        now = T0 + step * INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=10.0 + 1.0 * step)))
    demand = model.estimate(now, 10, 10, backlog_requests=0, startup_seconds=180.0, batch_fill=0.8)
    assert demand is not None and demand.rising
    assert 10 * demand.per_replica_requests_per_second > 27.0  # the ready fleet serves the measured rate
    assert demand.replicas_for_backlog == 0
    assert demand.replicas == math.ceil(demand.replicas_for_arrivals - 1e-9)
    # Three ready replicas cannot: the queue they build until help comes is asked for.
    short_handed = model.estimate(now, 3, 3, backlog_requests=0, startup_seconds=180.0, batch_fill=0.8)
    assert short_handed is not None and short_handed.replicas_for_backlog > 0


def test_the_replica_model_does_not_learn_from_latency_while_a_backlog_drains() -> None:
    # Replicas prefilling back to back through a backlog stall far more than in the steady state: the ITL
    # they report must not re-size the whole fleet. Once the backlog is gone the model learns again.
    model = DemandModel(replica_model(), SLO)
    engines = Engines(2)
    slow = dict(STEADY, itl=0.045)
    _, now, history = run(model, engines, 120, T0, 2, History(last_desired_replicas=2), slow, waiting=20)
    assert model.step_correction == 1.0
    run(model, engines, 120, now, 2, history, slow)
    assert model.step_correction > 1.5


def test_arrivals_are_falling_only_when_the_short_window_is_below_the_stable_one_beyond_noise() -> None:
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    now = T0
    for _ in range(12):  # a steady minute at 20 req/s: flat, not falling
        now += INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=20.0)))
    steady = model.estimate(now, 4, 4, 0.0, 300.0, 0.8)
    assert steady is not None and not steady.falling
    for _ in range(3):  # the crowd ends: 15 s at 2 req/s against a minute that still averages ~15
        now += INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=2.0)))
    ended = model.estimate(now, 4, 4, 0.0, 300.0, 0.8)
    assert ended is not None and ended.falling and not ended.rising
    for _ in range(24):  # two minutes at the new level: the judgement sticks until arrivals rise
        now += INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=2.0)))
    level = model.estimate(now, 4, 4, 0.0, 300.0, 0.8)
    assert level is not None and level.falling
    for _ in range(3):  # a rise beyond noise ends it
        now += INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=6.0)))
    risen = model.estimate(now, 4, 4, 0.0, 300.0, 0.8)
    assert risen is not None and not risen.falling


def test_a_fall_of_less_than_the_fall_threshold_is_not_a_fall() -> None:
    # 20 -> 15 req/s is beyond Poisson noise at 20 req/s but less than 1.5x: a ramp's blip ending, not a
    # crowd's end; replicas bought for the rise may still be wanted.
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    now = T0
    for _ in range(12):
        now += INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=20.0)))
    for _ in range(3):
        now += INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=14.0)))
    dip = model.estimate(now, 4, 4, 0.0, 300.0, 0.8)
    assert dip is not None and not dip.falling


def test_a_ramps_backlog_asks_for_no_more_replicas_than_the_measured_arrivals_do() -> None:
    # Backlog replicas take arrivals off the replicas holding the queue: the arrivals there are now (the
    # measured rate), not the ramp's extrapolation, which the arrivals' own term already buys. Capping at
    # the extrapolated count made the backlog's share flip with the ramp's judgement (bursty at 300 s:
    # 31 -> 17 -> 37 -> 20 -> 41 -> 21 replicas within a minute).
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    for step in range(1, 19):
        now = T0 + step * INTERVAL
        model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=10.0 + 1.0 * step)))
    deep = model.estimate(now, 4, 4, backlog_requests=20000, startup_seconds=180.0, batch_fill=0.8)
    assert deep is not None and deep.rising
    measured = math.ceil(22.5 / deep.per_replica_requests_per_second - 1e-9)  # the minute's rate
    assert deep.replicas_for_backlog == measured
    assert deep.replicas_for_backlog < math.ceil(deep.replicas_for_arrivals - 1e-9)


def test_after_a_fall_the_backlog_is_sized_from_what_arrives_now() -> None:
    # A minute at 20 req/s, then 15 s at 2: the stable window still says ~15.5 req/s. The backlog's deficit
    # and cap use the short window's 2 req/s: 4 ready replicas drain 2,000 waiting requests with what they
    # have to spare before any new replica could start, so no backlog replica is asked for.
    model = DemandModel(replica_model(), SLO)
    engines = Engines(4)
    now = T0
    for rate, steps in ((20.0, 12), (2.0, 3)):
        for _ in range(steps):
            now += INTERVAL
            model.observe(now, engines.advance(**dict(STEADY, arrivals_per_second=rate)))
    ended = model.estimate(now, 4, 4, backlog_requests=2000.0, startup_seconds=300.0, batch_fill=0.8)
    assert ended is not None and ended.falling
    assert ended.arrivals_per_second > 10.0  # the arrivals' own term still reads the stable window
    assert ended.replicas_for_backlog == 0
