"""Seeded chaos: faults, demand, clock jumps and restarts at random points never leak an instance or money.

Each seed is one schedule (tests/support/burst_chaos.py); a failing one reproduces with
`python bench/burst_chaos.py --seed N --verbose`. The benchmark runs 500 and more.
"""

import functools

import pytest

from tests.support.burst_chaos import ScheduleResult, run_schedule

SEEDS = range(1000, 1036)


@functools.cache
def _run(seed: int) -> ScheduleResult:
    return run_schedule(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos_schedule_keeps_every_invariant(seed: int) -> None:
    result = _run(seed)
    assert result.ok, "\n".join([*result.violations[:5], "--- last events ---", *result.log[-40:]])


def test_chaos_schedules_exercise_every_fault_restarts_and_creates() -> None:
    # Guards against a harness that silently stopped doing anything (a test that cannot fail).
    totals: dict[str, int] = {}
    creates = restarts = 0
    for seed in SEEDS:
        result = _run(seed)
        creates, restarts = creates + result.creates, restarts + result.restarts
        for name, count in result.faults.items():
            totals[name] = totals.get(name, 0) + count
    assert creates > 100 and restarts > 20
    expected = {
        "outage on", "key revoked", "no balance", "429 storm with retry-after", "429 storm without retry-after",
        "lost create response", "phantom create", "stuck provisioning", "sold out", "instance exited",
        "instance preempted", "deleted out of band (404)", "price rise", "terminate failing",
        "crash at a provider call", "crash at a status write", "clock jumps forward", "clock jumps back",
        "leaked instance of ours (an older operator's)",
    }  # fmt: skip
    assert expected <= set(totals), expected - set(totals)
