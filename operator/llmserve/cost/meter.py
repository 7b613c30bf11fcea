"""The month-to-date meter: integrates GPUs held and engine token counters into GPU-hours, dollars and tokens.

Pure and clock-injected: the caller passes `now` and what it observed; the meter returns the new state,
which the controller keeps in status so an operator restart continues the month where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

log = logging.getLogger(__name__)

Source = Literal["local", "rented"]


@dataclass(frozen=True)
class Holder:
    """Something that holds GPUs and costs money while it does: a scheduled pod, or a rented instance."""

    name: str
    source: Source
    gpus: int
    usd_per_gpu_hour: float


@dataclass(frozen=True)
class Spend:
    gpu_hours: float = 0.0
    usd: float = 0.0

    def plus(self, gpu_hours: float, usd: float) -> Spend:
        return Spend(self.gpu_hours + gpu_hours, self.usd + usd)


@dataclass(frozen=True)
class Month:
    """One calendar month (UTC) of one LLMServe."""

    month: str  # "2026-11"
    local: Spend = Spend()
    rented: Spend = Spend()
    output_tokens: int = 0

    @property
    def total_usd(self) -> float:
        return self.local.usd + self.rented.usd

    @property
    def usd_per_million_output_tokens(self) -> float | None:
        """None until a token is served: a price per token of nothing is not a number anyone should read."""
        return self.total_usd / self.output_tokens * 1e6 if self.output_tokens else None


@dataclass(frozen=True)
class MeterState:
    current: Month
    last_seconds: float  # when the meter last advanced (epoch seconds)
    # Last value of each engine's output-token counter, by pod: the baseline for the next difference.
    counters: Mapping[str, float] = field(default_factory=dict)
    previous: Month | None = None


@dataclass(frozen=True)
class Advance:
    state: MeterState
    uncounted_seconds: float  # an outage longer than the allowed gap: time the meter did not charge


def month_of(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m")


def month_start(seconds: float) -> float:
    moment = datetime.fromtimestamp(seconds, UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()


def start(now_seconds: float, counters: Mapping[str, float] | None = None) -> MeterState:
    """A fresh meter: charges from now on. Counters already on engines count as this month's tokens."""
    state = MeterState(Month(month_of(now_seconds)), now_seconds, {})
    return _count_tokens(state, counters) if counters else state


def _charge(month: Month, holders: Iterable[Holder], seconds: float) -> Month:
    local, rented = month.local, month.rented
    for holder in holders:
        gpu_hours = holder.gpus * seconds / 3600
        if holder.source == "local":
            local = local.plus(gpu_hours, gpu_hours * holder.usd_per_gpu_hour)
        else:
            rented = rented.plus(gpu_hours, gpu_hours * holder.usd_per_gpu_hour)
    return replace(month, local=local, rented=rented)


def _count_tokens(state: MeterState, counters: Mapping[str, float] | None) -> MeterState:
    """Adds each engine's counter growth; a counter below its baseline restarted (a new process) and
    counts from 0; an engine seen for the first time counts whole (it started serving this month)."""
    if counters is None:  # nothing scraped this pass: keep the baselines
        return state
    added = 0.0
    for pod, value in counters.items():
        before = state.counters.get(pod)
        added += value if before is None or value < before else value - before
    month = replace(state.current, output_tokens=state.current.output_tokens + round(added))
    return replace(state, current=month, counters=dict(counters))


def advance(
    state: MeterState,
    now_seconds: float,
    holders: list[Holder],
    counters: Mapping[str, float] | None,
    max_gap_seconds: float,
) -> Advance:
    """Charges `holders` for the time since the last advance (at most `max_gap_seconds`: after a long
    outage nobody knows what ran), rolling into a new month at the UTC month boundary, then adds tokens."""
    elapsed = max(0.0, now_seconds - state.last_seconds)
    charged = min(elapsed, max_gap_seconds)
    uncounted = elapsed - charged
    begin = now_seconds - charged
    current, previous = state.current, state.previous
    if month_of(now_seconds) != current.month:
        boundary = month_start(now_seconds)
        if month_of(begin) == current.month:  # part of the interval belongs to the month that ended
            current = _charge(current, holders, boundary - begin)
            begin = boundary
        previous, current = current, Month(month_of(now_seconds))
    current = _charge(current, holders, now_seconds - begin)
    moved = replace(state, current=current, previous=previous, last_seconds=now_seconds)
    return Advance(_count_tokens(moved, counters), uncounted)
