"""Request traces for the fleet benchmark: the Azure CSV format, and seeded generators for the trace suite."""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Request:
    arrival: float
    prompt_tokens: int
    output_tokens: int


# -- traces -------------------------------------------------------------------------------------------


def load_azure_trace(path: Path, max_model_len: int) -> list[Request]:
    """Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens); times from the first row."""
    rows = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            stamp = row["TIMESTAMP"].strip()
            if "." in stamp:  # the trace has 7 fractional digits; datetime takes 6
                head, fraction = stamp.split(".", 1)
                stamp = f"{head}.{fraction[:6]}"
            rows.append(
                (
                    datetime.fromisoformat(stamp).timestamp(),
                    int(row["ContextTokens"]),
                    int(row["GeneratedTokens"]),
                )
            )
    rows.sort()
    start = rows[0][0] if rows else 0.0
    return [_fit(t - start, p, o, max_model_len) for t, p, o in rows]


def _fit(arrival: float, prompt: int, output: int, max_model_len: int) -> Request:
    prompt = max(1, min(prompt, max_model_len - 64))
    return Request(arrival, prompt, max(1, min(output, max_model_len - prompt)))


def generate_trace(seed: int, duration_seconds: float, peak_rps: float, max_model_len: int) -> list[Request]:
    """Poisson arrivals under a compressed daily curve (night trough, day peak) with sudden 2-3x spikes.

    Token counts are lognormal around the Azure 2023 conversation trace (prompt median ~1000 tokens,
    output median ~130).
    """
    rng = random.Random(seed)
    spikes = [(rng.uniform(0.15, 0.85) * duration_seconds, rng.uniform(60, 180), rng.uniform(2.0, 3.0))
              for _ in range(3)]  # fmt: skip

    def rate(t: float) -> float:
        daily = 0.2 + 0.8 * math.sin(math.pi * t / duration_seconds) ** 2
        boost = max([m for start, length, m in spikes if start <= t < start + length], default=1.0)
        return peak_rps * daily * boost / 2.0  # the daily peak is half the spike peak

    ceiling = peak_rps * 1.5
    requests, t = [], 0.0
    while True:
        t += rng.expovariate(ceiling)
        if t >= duration_seconds:
            return requests
        if rng.random() < rate(t) / ceiling:  # thinning: a non-homogeneous Poisson process
            prompt = int(rng.lognormvariate(math.log(1000), 0.8))
            output = int(rng.lognormvariate(math.log(130), 0.9))
            requests.append(_fit(t, prompt, output, max_model_len))


def write_azure_trace(path: Path, requests: list[Request]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for r in requests:
            stamp = datetime.fromtimestamp(1700136946 + r.arrival).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
            writer.writerow([stamp, r.prompt_tokens, r.output_tokens])


# -- policies -----------------------------------------------------------------------------------------


def _poisson(
    rng: random.Random,
    duration_seconds: float,
    rate: Callable[[float], float],
    ceiling: float,
    sizes: Callable[[float], tuple[int, int]],
    max_model_len: int,
) -> list[Request]:
    """A non-homogeneous Poisson process by thinning; `sizes(t)` draws (prompt, output) tokens."""
    requests, t = [], 0.0
    while True:
        t += rng.expovariate(ceiling)
        if t >= duration_seconds:
            return requests
        if rng.random() < rate(t) / ceiling:
            prompt, output = sizes(t)
            requests.append(_fit(t, prompt, output, max_model_len))


def _conversation(rng: random.Random, prompt_sigma: float = 0.8) -> tuple[int, int]:
    """Azure 2023 conversation-like sizes: prompt median ~1000 tokens, output median ~130."""
    return int(rng.lognormvariate(math.log(1000), prompt_sigma)), int(rng.lognormvariate(math.log(130), 0.9))


def _crowds(
    rng: random.Random, duration: float, count: int, multiplier: float
) -> list[tuple[float, float, float]]:
    """(start, length, multiplier): crowds that ramp up within 20 s and last 1-5 minutes, not overlapping."""
    starts = sorted(rng.uniform(0.1, 0.8) * duration for _ in range(count))
    return [(s, rng.uniform(60, 300), multiplier) for s in starts]


def _crowd_factor(t: float, crowds: list[tuple[float, float, float]]) -> float:
    factor = 1.0
    for start, length, multiplier in crowds:
        if start <= t < start + length:
            factor = max(factor, 1 + (multiplier - 1) * min(1.0, (t - start) / 20.0))  # ramp in 20 s
    return factor


def suite(seed: int, scale: float, max_model_len: int) -> dict[str, list[Request]]:
    """The seeded trace suite; `scale` < 1 shortens every trace (--quick)."""
    rng = random.Random(seed)
    minutes = 60 * scale
    out: dict[str, list[Request]] = {}

    def swell(t: float, duration: float) -> float:
        return 0.25 + 0.75 * math.sin(math.pi * t / duration) ** 2

    d = 40 * minutes
    out["daily swell"] = _poisson(
        rng, d, lambda t: 14 * swell(t, d), 14, lambda t: _conversation(rng), max_model_len
    )
    d = 25 * minutes
    crowds3 = _crowds(rng, d, 2, 3.0)
    out["flash crowds 3x"] = _poisson(
        rng, d, lambda t: 6 * _crowd_factor(t, crowds3), 18, lambda t: _conversation(rng), max_model_len
    )
    crowds6 = _crowds(rng, d, 2, 6.0)
    out["flash crowds 6x"] = _poisson(
        rng, d, lambda t: 4 * _crowd_factor(t, crowds6), 24, lambda t: _conversation(rng), max_model_len
    )
    d = 25 * minutes
    phase = (0.35 * d, 0.35 * d + 600 * scale)

    def long_sizes(t: float) -> tuple[int, int]:
        if phase[0] <= t < phase[1]:
            return int(rng.gauss(6000, 500)), int(rng.lognormvariate(math.log(130), 0.9))
        return _conversation(rng)

    out["long-context phase"] = _poisson(rng, d, lambda t: 6.0, 6.0, long_sizes, max_model_len)
    out["heavy-tail prompts"] = _poisson(
        rng, d, lambda t: 6 * swell(t, d), 6, lambda t: _conversation(rng, prompt_sigma=1.4), max_model_len
    )
    d = 15 * minutes
    out["fleet > 16 replicas"] = _poisson(
        rng, d, lambda t: 110 * swell(t, d), 110, lambda t: _conversation(rng), max_model_len
    )
    return out
