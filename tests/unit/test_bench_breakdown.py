"""Where a fleet's GPU-hours went (bench/autoscaling_breakdown.py): hand-built runs, and a real one adds up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import autoscaling
from autoscaling_breakdown import breakdown
from autoscaling_fleet import Result
from autoscaling_oracle import Need
from autoscaling_traces import suite

HOUR_PER_REPLICA_SECOND = 1 / 3600  # one GPU per replica below


def _need(levels: list[int]) -> Need:
    """One level per 10 s bucket."""
    return Need([10.0 * i for i in range(len(levels))], [float(x) for x in levels], levels)


def test_a_replica_kept_after_a_spike_is_held_and_one_nothing_needed_is_above_any_need() -> None:
    # Need 1 for 100 s, 3 for 100 s, then 1 until 400 s (the last bucket ends at 400 s).
    need = _need([1] * 10 + [3] * 10 + [1] * 20)
    result = Result("x", end_seconds=400.0)
    result.lifetimes = [
        (0.0, 0.0, None, None),  # serves the need throughout
        (40.0, 100.0, 250.0, 260.0),  # x2: started 60 s ahead (cold), serve the spike, held 50 s, drain 10 s
        (40.0, 100.0, 250.0, 260.0),
    ] + [(300.0, 360.0, None, None)] * 3  # three late ones: 4 ready at 360-400 s for a need of 1
    split = breakdown(result, need, cold_start_seconds=60.0, gpus_per_replica=1)
    h = HOUR_PER_REPLICA_SECOND
    assert split.cold_start == pytest.approx((60 + 60 + 3 * 60) * h)
    assert split.draining == pytest.approx((10 + 10) * h)
    assert split.serving == pytest.approx((400 + 2 * 100) * h)
    # 200-250 s: two above the need of 1 but within the spike's 3 of the last 300 s; 360-400 s: of the
    # three extra, two are within that spike (held) and one above anything the trace needed.
    assert split.held == pytest.approx((2 * 50 + 2 * 40) * h)
    assert split.above == pytest.approx(40 * h)
    assert split.ahead == pytest.approx(0.0)
    assert split.total == pytest.approx((400 + 2 * 220 + 3 * 100) * h)


def test_replicas_ready_before_a_rise_count_as_ahead_of_it() -> None:
    need = _need([1] * 10 + [4] * 10)
    result = Result("x", end_seconds=200.0)
    result.lifetimes = [(0.0, 0.0, None, None)] + [(0.0, 70.0, None, None)] * 3
    split = breakdown(result, need, cold_start_seconds=60.0, gpus_per_replica=1)
    # From 70 s three extra replicas wait for the rise at 100 s, inside one cold start of it: ahead.
    assert split.ahead == pytest.approx(3 * 30 * HOUR_PER_REPLICA_SECOND)
    assert split.above == pytest.approx(0.0)


@pytest.mark.parametrize("label", ["flash crowds 3x"])
def test_the_split_of_a_real_run_adds_up_to_its_gpu_hours(label: str) -> None:
    args = autoscaling.parse_args(["--quick", "--policies", "llmserve"])
    trace = suite(args.seed, 0.1, args.max_model_len)[label]
    oracle, results, needed, _ = autoscaling.run_all(args, trace)
    for result in [oracle, *results]:
        split = breakdown(result, needed, args.cold_start_seconds, args.gpus_per_replica)
        assert split.total == pytest.approx(result.gpu_seconds / 3600, rel=0.01), result.name
        assert split.cold_start > 0 and split.serving > 0, result.name
