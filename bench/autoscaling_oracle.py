"""The clairvoyant bar: a schedule that knows the trace (oracle), the fluid lower bound, and which misses were avoidable."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from autoscaling_fleet import View
from autoscaling_traces import Request
from llmserve.autoscale.replica_model import ReplicaModel, SloTargets

BUCKET_SECONDS = 10.0
WINDOW_SECONDS = 60.0  # demand is judged over a minute of arrivals, as the policies' stable window does


@dataclass(frozen=True)
class Need:
    """Replicas the trace needs over time, from the same replica model the policy is seeded with."""

    times: list[float]  # bucket starts
    fractional: list[float]  # replicas at full batch, no headroom (the fluid bound)
    planned: list[int]  # whole replicas at the policy's batch fill (what the oracle provisions)

    def planned_at(self, t: float) -> int:
        index = min(len(self.times) - 1, max(0, bisect.bisect_right(self.times, t) - 1))
        return self.planned[index]


def need(
    trace: list[Request], model: ReplicaModel, slo: SloTargets, batch_fill: float, safety: float
) -> Need:
    """Per 10 s bucket: the minute of arrivals around it over one replica's rate at that minute's mix."""
    end = trace[-1].arrival if trace else 0.0
    arrivals = [r.arrival for r in trace]
    times, fractional, planned = [], [], []
    t = 0.0
    while t <= end:
        lo = bisect.bisect_left(arrivals, t - WINDOW_SECONDS / 2)
        hi = bisect.bisect_left(arrivals, t + BUCKET_SECONDS + WINDOW_SECONDS / 2)
        window = trace[lo:hi]
        if window:
            span = min(end, t + BUCKET_SECONDS + WINDOW_SECONDS / 2) - max(0.0, t - WINDOW_SECONDS / 2)
            rate = len(window) / max(span, BUCKET_SECONDS)
            prompt = sum(r.prompt_tokens for r in window) / len(window)
            output = sum(r.output_tokens for r in window) / len(window)
            full = rate / model.requests_per_second(prompt, output, slo, 1.0)
            fill = rate / model.requests_per_second(prompt, output, slo, batch_fill)
        else:
            full = fill = 0.0
        times.append(t)
        fractional.append(full)
        planned.append(max(1, math.ceil(fill * safety - 1e-9)))
        t += BUCKET_SECONDS
    return Need(times, fractional, planned)


def fluid_gpu_hours(needed: Need, gpus_per_replica: int) -> float:
    """Fractional replicas exactly when needed, no cold start: no schedule can use fewer GPU-hours."""
    return sum(needed.fractional) * BUCKET_SECONDS * gpus_per_replica / 3600


class Oracle:
    """Knows the trace: asks now for what will be needed one cold start from now (and over that start-up),
    and lets replicas go as soon as the need falls."""

    interval_seconds = 5.0

    def __init__(self, needed: Need, cold_start_seconds: float, safety: float) -> None:
        self.needed, self.cold_start = needed, cold_start_seconds
        self.name = f"oracle (clairvoyant, x{safety:g})"

    def desired(self, view: View) -> int:
        horizon = view.now + self.cold_start + BUCKET_SECONDS
        t, wanted = view.now, 1
        while t <= horizon:
            wanted = max(wanted, self.needed.planned_at(t))
            t += BUCKET_SECONDS
        return wanted


def jump_windows(
    needed: Need, cold_start_seconds: float, factor: float = 1.25, hold_seconds: float = 300.0
) -> list[tuple[float, float]]:
    """Where demand outruns a cold start: the need of a 10 s bucket is above `factor` times the highest need
    seen in the `hold_seconds` (the default scale-down window) that ended one cold start before it.

    Replicas a reactive policy asks for arrive one cold start later, so at time t it can have at most what
    it saw by t - cold start (and kept through its scale-down window); a fleet at the default headroom
    (0.8 fill) absorbs 1.25x that. A request arriving in a bucket above it could only be served in time by
    a fleet that knew it was coming (the oracle pre-provisions for it): its miss is unavoidable. A step
    gives a window of one cold start; a ramp that outpaces 1.25x per cold start gives a window as long as
    it does. Before the trace starts the level is the initial fleet's (every policy starts with
    planned[0]). (An earlier version compared with the previous cold start's highest bucket, which a
    steady ramp never exceeds by 25%: a ramp that tripled within one cold start counted as avoidable.)
    """
    windows = []
    steps = max(1, round(cold_start_seconds / BUCKET_SECONDS))
    hold = max(0, round(hold_seconds / BUCKET_SECONDS))
    for index, t in enumerate(needed.times):
        seen = needed.planned[max(0, index - steps - hold) : max(0, index - steps) + 1]
        if needed.planned[index] > factor * max(seen) and needed.planned[index] > max(seen):
            windows.append((t, t + BUCKET_SECONDS))
    merged: list[tuple[float, float]] = []
    for start, stop in windows:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def unavoidable(arrival: float, windows: list[tuple[float, float]]) -> bool:
    index = bisect.bisect_right([w[0] for w in windows], arrival) - 1
    return index >= 0 and arrival < windows[index][1]
