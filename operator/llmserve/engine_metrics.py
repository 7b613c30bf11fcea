"""Reads a vLLM engine's /metrics page: the one parser the autoscaler, the gateway and the cost meter share.

Aggregation over several series of one metric (documented in docs/architecture.md, "Engine metrics"):
a vLLM replica started with data parallelism (`--data-parallel-size N`) exports one series per engine
rank (label `engine="0"`, `"1"`, …), and counters also split by label (`finished_reason`, …).

- request counts (waiting, running) and counters **add up**: together they are the replica's queue and
  its totals;
- KV-cache use is the **mean** over the ranks, clamped to 0..1: each rank has its own, equally sized
  cache, so the mean is the fraction of the replica's KV cache in use (a sum capped at 1 would call a
  replica full when two of four ranks are half full);
- where vLLM renamed a metric, the newer name wins and the older one is read only when the newer one is
  absent (never mixed): `vllm:kv_cache_usage_perc` over `vllm:gpu_cache_usage_perc` (vLLM < 0.10, V0),
  `vllm:inter_token_latency_seconds` over `vllm:time_per_output_token_seconds` (vLLM < 0.11).

Routing (the gateway) and scaling (the autoscaler) both read `EngineLoad` from here, so they see the
same load for the same page.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from llmserve.engine_metrics_names import (
    FINISHED,
    GENERATION_TOKENS,
    ITL,
    ITL_LEGACY,
    KV_CACHE,
    KV_CACHE_LEGACY,
    PROMPT_TOKENS,
    QUEUE_TIME,
    RUNNING,
    TTFT,
    WAITING,
)

# The names (and which vLLM release has which) live in engine_metrics_names; this module reads them.
GAUGES = (WAITING, RUNNING, KV_CACHE, KV_CACHE_LEGACY)
# Counters and histograms for arrivals, the token mix and latency (autoscaling.slo, cost).
COUNTERS = (FINISHED, PROMPT_TOKENS, GENERATION_TOKENS)
HISTOGRAMS = (TTFT, ITL, ITL_LEGACY, QUEUE_TIME)
ALL_FAMILIES = (*GAUGES, *COUNTERS, *HISTOGRAMS)


class MetricsFormatError(ValueError):
    """The page was read but does not carry what was asked of it (or is not Prometheus text)."""


@dataclass(frozen=True)
class EngineLoad:
    """One replica's scheduler gauges, aggregated over its engine ranks as the module docstring says."""

    requests_waiting: float
    requests_running: float
    kv_cache_fraction: float | None = None  # None when the engine exports no KV-cache gauge


@dataclass
class EnginePage:
    """The samples of the wanted families: values by sample name, histogram buckets by family."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # family -> le -> cumulative

    def total(self, sample_name: str) -> float | None:
        """The sum over every series of one sample name (None when the page has none)."""
        values = self.samples.get(sample_name)
        return sum(values) if values else None

    def load(self) -> EngineLoad:
        return engine_load(self.samples)


def engine_load(samples: Mapping[str, list[float]]) -> EngineLoad:
    """The one aggregation of the gauges (a scraped page's samples, or a Prometheus query's by name)."""
    if not samples.get(WAITING):
        raise MetricsFormatError(f"no {WAITING} gauge: is this a vLLM engine?")
    kv = samples.get(KV_CACHE) or samples.get(KV_CACHE_LEGACY)
    return EngineLoad(
        requests_waiting=sum(samples[WAITING]),
        requests_running=sum(samples.get(RUNNING, [])),
        kv_cache_fraction=min(1.0, max(0.0, sum(kv) / len(kv))) if kv else None,
    )


@functools.cache
def _line_filter(families: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(re.escape(name) for name in families)
    return re.compile(rf"^(# (TYPE|HELP) )?(?:{names})(?:_total|_bucket|_sum|_count)?[ {{]")


def read_page(text: str, families: Iterable[str] = ALL_FAMILIES) -> EnginePage:
    """The samples of `families` on a Prometheus text page. Only their lines reach the parser: a vLLM
    page is mostly series nobody here reads, and parsing them all cost most of a scrape's CPU."""
    wanted_line = _line_filter(tuple(families))
    wanted = "\n".join(line for line in text.splitlines() if wanted_line.match(line)) + "\n"
    page = EnginePage()
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if not math.isfinite(sample.value) or sample.name.endswith("_created"):
                    continue
                if sample.name.endswith("_bucket") and "le" in sample.labels:
                    per_le = page.buckets.setdefault(sample.name.removesuffix("_bucket"), {})
                    le = float(sample.labels["le"])
                    per_le[le] = per_le.get(le, 0.0) + sample.value
                else:
                    page.samples.setdefault(sample.name, []).append(float(sample.value))
    except ValueError as err:
        raise MetricsFormatError(f"unparsable metrics: {err}") from err
    return page


def parse_engine_load(text: str) -> EngineLoad:
    """The scheduler gauges of one engine page (MetricsFormatError when it has none)."""
    return read_page(text, GAUGES).load()
