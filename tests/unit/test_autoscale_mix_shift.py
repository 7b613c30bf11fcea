"""A long-context phase is sized at its own prompts at once, not when the minute's mean has caught up.

Recorded sequences of one replica's cumulative counters (one scrape every 5 s, clock injected), fed to the
same DemandModel the operator runs: a steady conversation mix, then ~6,000-token prompts at the same rate.
"""

from __future__ import annotations

import math
import random

from llmserve.autoscale.demand import DemandModel, DemandSettings
from llmserve.autoscale.histogram import Histogram
from llmserve.autoscale.policy import History, PolicyConfig, ReplicaMetrics, Snapshot, decide
from llmserve.autoscale.replica_model import ReplicaModel, SloTargets
from llmserve.autoscale.window import EngineCounters, SignalWindow
from llmserve.sim.metrics import PER_TOKEN_BUCKETS, TTFT_BUCKETS
from llmserve.sim.profiles import resolve_profile

SLO = SloTargets(time_to_first_token_seconds=1.0, inter_token_latency_seconds=0.05, quantile=0.9)
T0 = 1_700_000_000.0
INTERVAL = 5.0


def replica_model() -> ReplicaModel:
    profile = resolve_profile("NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-70B-Instruct", 4)
    return ReplicaModel.from_profile(profile, 32)


class Engine:
    """One engine's counters: each interval, `count` requests with prompts drawn by `prompt()`."""

    def __init__(self) -> None:
        self.finished = self.prompt_tokens = self.generated = 0.0
        self.ttft = Histogram.empty(TTFT_BUCKETS)
        self.itl = Histogram.empty(PER_TOKEN_BUCKETS)

    def advance(self, count: int, prompts: list[int]) -> dict[str, tuple[EngineCounters, float, float]]:
        self.finished += count
        self.prompt_tokens += sum(prompts)
        self.generated += 150 * count
        self.ttft = self.ttft.plus(Histogram.of(TTFT_BUCKETS, [0.3] * count))
        self.itl = self.itl.plus(Histogram.of(PER_TOKEN_BUCKETS, [0.03] * (150 * count)))
        counters = EngineCounters(self.finished, self.prompt_tokens, self.generated, self.ttft, self.itl)
        return {"pod-0": (counters, 10.0, 10.0)}


def feed(model: DemandModel, engine: Engine, start: float, seconds: float, prompt: object) -> float:
    """Scrapes every 5 s at 6 req/s; `prompt(rng)` draws one request's prompt tokens. Returns the clock."""
    rng = random.Random(7)
    now = start
    while now < start + seconds:
        now += INTERVAL
        model.observe(now, engine.advance(30, [prompt(rng) for _ in range(30)]))  # type: ignore[operator]
        model.estimate(now, 8, 8, 0.0, 60.0, 0.8)
    return now


def conversation(rng: random.Random) -> int:
    return int(rng.lognormvariate(math.log(1000), 0.8))


def long_context(rng: random.Random) -> int:
    return int(rng.gauss(6000, 500))


def test_a_long_prompt_phase_is_sized_at_its_own_mix_within_one_short_window() -> None:
    model = DemandModel(replica_model(), SLO)
    engine = Engine()
    now = feed(model, engine, T0, 120, conversation)
    before = model.estimate(now, 8, 8, 0.0, 60.0, 0.8)
    assert before is not None and not before.mix_shifted
    # Two scrapes into the phase: the minute's mean is still mostly conversation (~2,000 tokens), the
    # short window's is ~4,000 and far beyond its noise.
    now = feed(model, engine, now, 10, long_context)
    demand = model.estimate(now, 8, 8, 0.0, 60.0, 0.8)
    assert demand is not None and demand.mix_shifted
    assert demand.prompt_tokens_per_request > 3500
    assert demand.describe().startswith("longer prompts: ")
    at_minute_mix = model.model.requests_per_second(2200, 150, SLO, 0.8)
    assert demand.per_replica_requests_per_second < 0.7 * at_minute_mix
    # The shift sticks while the minute catches up, and ends when the short window is no heavier.
    now = feed(model, engine, now, 120, long_context)
    assert model.mix_shifted is False
    steady = model.estimate(now, 8, 8, 0.0, 60.0, 0.8)
    assert steady is not None and steady.prompt_tokens_per_request > 5500


def test_a_heavy_tailed_mix_does_not_pass_for_a_shift() -> None:
    # Lognormal prompts with sigma 1.4 at 1.2 req/s: a 15 s mean of ~18 prompts often runs 1.5x above the
    # minute's by chance, and 2-4 of its standard errors above it.
    model = DemandModel(replica_model(), SLO)
    engine = Engine()
    shifted = []
    rng = random.Random(11)
    now = T0
    for _ in range(240):  # 20 minutes
        now += INTERVAL
        prompts = [min(8000, int(rng.lognormvariate(math.log(1000), 1.4))) for _ in range(6)]
        model.observe(now, engine.advance(6, prompts))
        demand = model.estimate(now, 8, 8, 0.0, 60.0, 0.8)
        shifted.append(demand is not None and demand.mix_shifted)
    assert not any(shifted)


def test_prompt_deviation_is_recovered_from_interval_sums() -> None:
    window = SignalWindow(keep_seconds=120)
    engine = Engine()
    rng = random.Random(3)
    now = T0
    for _ in range(13):
        now += INTERVAL
        window.observe(now, engine.advance(30, [int(rng.gauss(3000, 800)) for _ in range(30)]))
    found = window.prompt_tokens_deviation(now, 60, 15)
    assert found is not None
    mean, deviation = found
    assert abs(mean - 3000) < 100
    assert 500 < deviation < 1100  # nine intervals of 30: a loose estimate, but of the right size
    assert window.prompt_tokens_deviation(now, 20, 15) is None  # one interval: no spread to read


def test_the_phase_gets_its_replicas_in_one_decision_and_the_backlog_keeps_the_minutes_mix() -> None:
    config = PolicyConfig(min_replicas=1, max_replicas=64, batch_slots_per_replica=32, batch_slots_target=0.8)
    shifting = DemandModel(replica_model(), SLO)
    lagging = DemandModel(replica_model(), SLO, DemandSettings(mix_shift_deviations=math.inf))
    results = {}
    for name, model in (("shift", shifting), ("minute", lagging)):
        engine = Engine()
        now = feed(model, engine, T0, 120, conversation)
        now = feed(model, engine, now, 10, long_context)
        # One ready replica with 12 waiting: the backlog term acts too.
        demand = model.estimate(now, 2, 1, 12.0, 60.0, 0.8)
        assert demand is not None
        snapshot = Snapshot(now, 2, 1, 0, (ReplicaMetrics(12, 20, 0.4),), demand=demand)
        results[name] = (demand, decide(snapshot, config, History(last_desired_replicas=2)))
    shifted, shifted_decision = results["shift"]
    minute, minute_decision = results["minute"]
    assert shifted.mix_shifted and not minute.mix_shifted
    # Sized at the phase's mix: at least the arrivals' need at ~4,000-token prompts, in one decision.
    assert shifted.replicas_for_arrivals > 1.5 * minute.replicas_for_arrivals
    assert shifted_decision.desired_replicas > minute_decision.desired_replicas
    assert shifted_decision.reason.startswith("longer prompts: ")
    # The backlog term is the one the minute's mix gives (the queue sits on the ready replica).
    r = minute.per_replica_requests_per_second
    remaining = 12.0 - (1 * r - 6.0) * 60.0
    expected = min(math.ceil(remaining / (r * 30.0) - 1e-9), math.ceil(shifted.replicas_for_arrivals - 1e-9))
    assert shifted.replicas_for_backlog == expected
    r_short = shifted.per_replica_requests_per_second
    at_short_mix = math.ceil((12.0 - (1 * r_short - 6.0) * 60.0) / (r_short * 30.0) - 1e-9)
    assert at_short_mix > expected
