"""Where a policy's GPU-hours go: cold starts, serving the trace's need, replicas above it, draining.

The need is the oracle's (`autoscaling_oracle.need`: whole replicas at the policy's batch fill, per 10 s
of the trace). Every replica-second of a run falls in one of:

- **cold start**: created, not yet ready (paid by every schedule, the oracle's too);
- **serving the need**: ready, up to the need of that moment;
- **ahead of a rise**: ready above the need, but no more than the highest need of the next cold start
  (what a clairvoyant schedule pre-provisions);
- **held after a peak**: ready above the need, no more than the highest need of the previous
  `HOLD_SECONDS` (a scale-down window keeping what a spike needed);
- **above any need**: ready above every need of the previous window and the next cold start (replicas
  asked for that nothing in the trace needed: over-sized ramps, backlog replicas landing after it);
- **draining**: let go by the policy, finishing what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaling_fleet import Result
from autoscaling_oracle import Need

GRID_SECONDS = 1.0
HOLD_SECONDS = 300.0  # the default scale-down window, as in the unavoidable-miss windows


@dataclass(frozen=True)
class Breakdown:
    """GPU-hours by where they went (see the module docstring)."""

    cold_start: float
    serving: float
    ahead: float
    held: float
    above: float
    draining: float

    @property
    def total(self) -> float:
        return self.cold_start + self.serving + self.ahead + self.held + self.above + self.draining

    def describe(self) -> str:
        return (
            f"cold start {self.cold_start:.1f}, serving the need {self.serving:.1f}, ahead of a rise "
            f"{self.ahead:.1f}, held after a peak {self.held:.1f}, above any need {self.above:.1f}, "
            f"draining {self.draining:.1f}"
        )


def _need_at(needed: Need, t: float, last_seconds: float) -> int:
    # Past the trace's last bucket nothing arrives: a replica kept then serves no need.
    return 0 if t >= last_seconds else needed.planned_at(t)


def breakdown(result: Result, needed: Need, cold_start_seconds: float, gpus_per_replica: int) -> Breakdown:
    """Splits `result`'s GPU-hours along the need (one-second grid; replicas' intervals as the fleet ran them)."""
    end = result.end_seconds
    steps = int(end // GRID_SECONDS) + 1
    ready = [0] * (steps + 1)
    cold = drain = 0.0
    for created, ready_at, removed_at, stopped in result.lifetimes:
        finish = stopped if stopped is not None else end
        cold += max(0.0, min(ready_at, finish) - created)
        if removed_at is not None and removed_at >= ready_at:
            drain += max(0.0, finish - removed_at)
            serve_end = removed_at
        else:
            serve_end = finish
        if serve_end > ready_at:  # ready over [ready_at, serve_end): count it on the grid
            first = int(ready_at // GRID_SECONDS)
            last = min(steps, int(serve_end // GRID_SECONDS))
            ready[first] += 1
            ready[last] -= 1
    last_seconds = (needed.times[-1] + 10.0) if needed.times else 0.0
    need = [_need_at(needed, i * GRID_SECONDS, last_seconds) for i in range(steps)]
    ahead_steps = int(cold_start_seconds // GRID_SECONDS)
    hold_steps = int(HOLD_SECONDS // GRID_SECONDS)
    serving = ahead = held = above = 0.0
    running = 0
    for i in range(steps):
        running += ready[i]
        now_need = need[i]
        excess = max(0, running - now_need)
        serving += min(running, now_need)
        if excess:
            coming = max(need[i : i + ahead_steps + 1]) - now_need
            past = max(need[max(0, i - hold_steps) : i + 1]) - now_need
            a = min(excess, max(0, coming))
            h = min(excess - a, max(0, past))
            ahead += a
            held += h
            above += excess - a - h
    to_hours = GRID_SECONDS * gpus_per_replica / 3600
    return Breakdown(
        cold_start=cold * gpus_per_replica / 3600,
        serving=serving * to_hours,
        ahead=ahead * to_hours,
        held=held * to_hours,
        above=above * to_hours,
        draining=drain * gpus_per_replica / 3600,
    )
