"""bench/burst.py imports and runs: who serves the requests, what they cost, and when renting starts."""

from __future__ import annotations

import argparse

from bench import burst


def scenario(*extra: str) -> tuple[argparse.Namespace, list[burst.Request]]:
    """Two minutes of the seeded bursty trace at a few requests per second: seconds of CPU."""
    args = burst.parse_args(["--duration-minutes", "2", "--peak-rps", "6", *extra])
    trace = burst.generate_trace(args.seed, args.duration_minutes * 60, args.peak_rps, args.max_model_len)
    return args, trace


def test_with_no_local_gpus_every_request_is_served_by_rented_replicas_that_cost_money() -> None:
    args, trace = scenario("--unschedulable-seconds", "0")
    fleet = burst.BurstFleet(args, "all rented", local_gpus=0, burst_max=4, unsched_s=0.0)
    result = fleet.run(trace, 1)

    assert len(result.finished) == len(trace)
    assert fleet.replicas and all(isinstance(r, burst.Rented) for r in fleet.replicas)
    local_usd, rented_usd = burst.dollars(result, args)
    assert local_usd == 0 and result.gpu_seconds == 0
    assert rented_usd > 0 and result.peak_rented >= 1


def test_with_ample_local_gpus_nothing_is_rented_and_renting_costs_nothing() -> None:
    args, trace = scenario()
    fleet = burst.BurstFleet(args, "local + burst", local_gpus=256, burst_max=4, unsched_s=60.0)
    result = fleet.run(trace, 1)

    assert len(result.finished) == len(trace)
    assert fleet.rented == [] and result.peak_rented == 0
    local_usd, rented_usd = burst.dollars(result, args)
    assert rented_usd == 0 and result.rented_seconds == 0
    assert local_usd > 0


def test_a_replica_is_rented_only_after_staying_unschedulable_for_the_configured_time() -> None:
    # One local replica's worth of GPUs against a spike: the policy wants more, they stay Pending, and
    # the burst rule rents once they have waited unschedulableSeconds (checked at its 10 s interval).
    args, trace = scenario("--peak-rps", "20", "--unschedulable-seconds", "30")
    fleet = burst.BurstFleet(args, "local + burst", local_gpus=4, burst_max=2, unsched_s=30.0)
    result = fleet.run(trace, 1)

    assert len(result.finished) == len(trace)
    assert result.unschedulable_to_create, "the spike should have left replicas Unschedulable"
    assert all(30 <= waited < 30 + burst.BURST_TICK_SECONDS for waited in result.unschedulable_to_create)
    assert 1 <= result.peak_rented <= 2
    assert result.rented_seconds > 0
