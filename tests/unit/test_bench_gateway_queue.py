"""bench/autoscaling.py --gateway-queue: requests wait in the simulated gateway while every batch is full."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import autoscaling
from autoscaling_fleet import Fleet
from autoscaling_policies import Static
from autoscaling_traces import suite


def _run(gateway_queue: bool, *options: str) -> tuple[Fleet, autoscaling.Result, int]:
    args = autoscaling.parse_args(
        ["--quick", *options, "--gateway-queue" if gateway_queue else "--no-gateway-queue"]
    )
    trace = suite(args.seed, 0.05, args.max_model_len)["flash crowds 6x"]
    fleet = Fleet(args, Static(1))
    peak_load = 0
    original_tick = fleet.tick

    def tick(now: float) -> None:
        nonlocal peak_load
        peak_load = max(peak_load, *(r.load for r in fleet.ready(now)), 0)
        original_tick(now)

    fleet.tick = tick  # type: ignore[method-assign]
    return fleet, fleet.run(trace, 1), peak_load


def test_with_the_gateway_queue_an_engine_never_holds_more_than_its_batch_and_every_request_is_served() -> (
    None
):
    fleet, result, peak_load = _run(True, "--queue-size", "0", "--queue-order", "fifo")
    batch = fleet.args.max_num_seqs
    assert peak_load <= batch
    assert not fleet.arrivals and not fleet.held and len(result.finished) > 0
    _, engine_queue, engine_peak_load = _run(gateway_queue=False)
    assert engine_peak_load > batch  # the same overload queues in the engine without the option
    assert len(engine_queue.finished) == len(result.finished) and not result.rejected


def test_a_bounded_gateway_queue_refuses_what_does_not_fit_and_counts_it_as_missed() -> None:
    fleet, result, _ = _run(True, "--queue-size", "64", "--queue-timeout-seconds", "30")
    trace_length = len(result.finished) + len(result.rejected)
    assert result.rejected and not fleet.arrivals and not fleet.held and not fleet.late
    _, unbounded, _ = _run(True, "--queue-size", "0")
    assert trace_length == len(unbounded.finished)  # each request either finished or got its 503
    assert autoscaling.attainment(result, fleet.args) <= 1 - len(result.rejected) / trace_length


def test_late_last_serves_requests_that_can_still_meet_the_ttft_target_first() -> None:
    fleet, fifo, _ = _run(True, "--queue-size", "0", "--queue-order", "fifo")
    _, late_last, _ = _run(True, "--queue-size", "0")  # late-last is the default
    assert len(late_last.finished) == len(fifo.finished)
    # One replica under a 6x crowd: first come first served makes everyone wait behind the backlog.
    assert autoscaling.attainment(late_last, fleet.args) > 1.25 * autoscaling.attainment(fifo, fleet.args)
