"""Load shapes for rent-vs-buy: an Azure-format request trace binned by time, or a daily peak/trough curve."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class TraceRequest:
    arrival_seconds: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LoadShape:
    """Requests per second in consecutive equal bins, and the mean request shape over the whole shape."""

    bin_seconds: float
    requests_per_second: tuple[float, ...]
    mean_prompt_tokens: int
    mean_output_tokens: int
    source: str

    @property
    def duration_seconds(self) -> float:
        return self.bin_seconds * len(self.requests_per_second)

    def bin_starts(self) -> list[float]:
        return [index * self.bin_seconds for index in range(len(self.requests_per_second))]


class TraceError(ValueError):
    """The trace file cannot be read; the message names the file, line and column."""


def _timestamp(text: str) -> float:
    stamp = text.strip()
    if "." in stamp:  # Azure's trace has 7 fractional digits; datetime takes 6
        head, fraction = stamp.split(".", 1)
        stamp = f"{head}.{fraction[:6]}"
    return datetime.fromisoformat(stamp).timestamp()


def read_azure_trace(path: Path) -> list[TraceRequest]:
    """Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens); times from the first row."""
    rows: list[tuple[float, int, int]] = []
    try:
        handle = path.open(newline="")
    except OSError as err:
        raise TraceError(f"--trace {path}: {err.strerror}") from err
    with handle:
        reader = csv.DictReader(handle)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or [])
        if missing:
            raise TraceError(f"--trace {path}: missing column(s) {', '.join(sorted(missing))}; expected "
                             "TIMESTAMP,ContextTokens,GeneratedTokens (Azure LLM inference trace format)")  # fmt: skip
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    (_timestamp(row["TIMESTAMP"]), int(row["ContextTokens"]), int(row["GeneratedTokens"]))
                )
            except (TypeError, ValueError) as err:
                raise TraceError(f"--trace {path} line {line}: {err}") from err
    if not rows:
        raise TraceError(f"--trace {path}: no requests")
    rows.sort()
    start = rows[0][0]
    return [TraceRequest(t - start, max(1, p), max(1, o)) for t, p, o in rows]


def shape_from_trace(requests: Iterable[TraceRequest], bin_seconds: float, source: str) -> LoadShape:
    """Arrivals per bin over the trace's span (the last bin is whole: a partial one would read as a dip)."""
    items = list(requests)
    if not items:
        raise TraceError(f"{source}: no requests")
    count = max(1, math.ceil((items[-1].arrival_seconds + 1e-9) / bin_seconds))
    arrivals = [0] * count
    for request in items:
        arrivals[min(count - 1, int(request.arrival_seconds // bin_seconds))] += 1
    return LoadShape(
        bin_seconds=bin_seconds,
        requests_per_second=tuple(n / bin_seconds for n in arrivals),
        mean_prompt_tokens=round(sum(r.prompt_tokens for r in items) / len(items)),
        mean_output_tokens=round(sum(r.output_tokens for r in items) / len(items)),
        source=source,
    )


def daily_curve(
    peak_requests_per_second: float,
    trough_requests_per_second: float,
    prompt_tokens: int,
    output_tokens: int,
    peak_hour: float = 14.0,
    bin_seconds: float = 300.0,
) -> LoadShape:
    """One day whose rate swings as a cosine from the trough (12 h from the peak) to the peak at `peak_hour`."""
    if trough_requests_per_second < 0 or peak_requests_per_second < trough_requests_per_second:
        raise TraceError("--peak-rps must be at least --trough-rps, and both at least 0")
    bins = round(SECONDS_PER_DAY / bin_seconds)
    swing = peak_requests_per_second - trough_requests_per_second
    rates = []
    for index in range(bins):
        hour = (index + 0.5) * bin_seconds / 3600
        rates.append(
            trough_requests_per_second + swing * (1 + math.cos(2 * math.pi * (hour - peak_hour) / 24)) / 2
        )
    return LoadShape(
        bin_seconds=bin_seconds,
        requests_per_second=tuple(rates),
        mean_prompt_tokens=prompt_tokens,
        mean_output_tokens=output_tokens,
        source=f"daily curve {trough_requests_per_second:g}-{peak_requests_per_second:g} req/s, peak at {peak_hour:g}h",
    )
