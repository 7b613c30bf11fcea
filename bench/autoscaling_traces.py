"""Request traces for the fleet benchmark: the Azure CSV format, and seeded generators for the trace suite."""

from __future__ import annotations

import csv
import math
import random
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
