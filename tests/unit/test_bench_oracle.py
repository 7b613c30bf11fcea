"""The fleet benchmark's yardsticks: the oracle's plan, the fluid bound and which misses count as unavoidable."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from autoscaling_oracle import (
    BUCKET_SECONDS,
    Need,
    Oracle,
    fluid_gpu_hours,
    jump_windows,
    need,
    unavoidable,
)
from autoscaling_traces import Request
from llmserve.autoscale.replica_model import ReplicaModel, SloTargets
from llmserve.sim.profiles import resolve_profile

SLO = SloTargets(1.0, 0.05)
MODEL = ReplicaModel.from_profile(resolve_profile("NVIDIA-H100-80GB-HBM3", "llama-3.1-70b", 4), 32)


def steady_then_step(low_rps: float, high_rps: float, step_at: float, end: float) -> list[Request]:
    trace, t = [], 0.0
    while t < end:
        trace.append(Request(t, 1000, 150))
        t += 1 / (low_rps if t < step_at else high_rps)
    return trace


def test_the_plan_follows_a_step_in_demand_and_the_fluid_bound_is_below_it() -> None:
    trace = steady_then_step(2, 20, step_at=600, end=1200)
    needed = need(trace, MODEL, SLO, batch_fill=0.8, safety=1.0)
    before, after = needed.planned_at(300), needed.planned_at(900)
    assert before == 1
    assert after == math.ceil(20 / MODEL.requests_per_second(1000, 150, SLO, 0.8))
    planned_hours = sum(needed.planned) * BUCKET_SECONDS * 4 / 3600
    assert 0 < fluid_gpu_hours(needed, 4) < planned_hours


def test_the_oracle_asks_one_cold_start_ahead() -> None:
    needed = Need(times=[0.0, 10.0, 20.0, 30.0], fractional=[1, 1, 4, 4], planned=[1, 1, 5, 5])
    oracle = Oracle(needed, cold_start_seconds=15, safety=1.0)

    class View:
        now = 0.0

    assert oracle.desired(View()) == 5  # at 0 s it already provisions for the need at 20 s


def test_misses_within_a_cold_start_after_a_jump_are_unavoidable_and_others_are_not() -> None:
    needed = Need(times=[0.0, 10.0, 20.0, 30.0, 40.0], fractional=[0] * 5, planned=[2, 2, 2, 6, 6])
    windows = jump_windows(needed, cold_start_seconds=20)
    assert windows == [(30.0, 50.0)]
    assert unavoidable(35.0, windows)
    assert not unavoidable(25.0, windows) and not unavoidable(55.0, windows)
    # A slow swell (never above 1.25x its level one cold start earlier) has no unavoidable window.
    swell = Need(times=[0.0, 10.0, 20.0, 30.0], fractional=[0] * 4, planned=[4, 4, 5, 5])
    assert jump_windows(swell, cold_start_seconds=20) == []
