"""The fleet's SLO signals from Prometheus: rate() and histogram_quantile() queries built, and their answers read.

Pure (no I/O). With `metricsSource: prometheus` the engines' counters are not scraped by the operator, so
the demand model's window (arrivals, token mix, TTFT and ITL at the SLO's quantile, batch size) is asked of
Prometheus instead: one instant query per window, each signal a sub-expression tagged with a `signal`
label (`label_replace`) and joined with `or`, so a decision costs two HTTP round trips, not twenty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmserve.autoscale.histogram import QuantileSummary
from llmserve.autoscale.window import WindowRates

FINISHED = "vllm:request_success_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
ITL_LEGACY = "vllm:time_per_output_token_seconds"  # vLLM < 0.11

# rate() needs two samples inside its range; Prometheus commonly scrapes every 15 s (30 s in many charts).
MIN_RANGE_SECONDS = 30.0


def selector(namespace: str, pod_names: Iterable[str]) -> str:
    """The label matchers of the LLMServe's ready pods (pod names are regex-escaped)."""
    pods = "|".join(re.escape(p) for p in sorted(pod_names))
    return f'namespace="{namespace}",pod=~"{pods}"'


def _tag(expression: str, signal: str) -> str:
    return f'label_replace({expression}, "signal", "{signal}", "", "")'


def window_query(namespace: str, pod_names: Iterable[str], window_seconds: float, quantile: float) -> str:
    """One instant query answering every signal of one window as a vector tagged by `signal`."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be within (0, 1), not {quantile}")
    sel = selector(namespace, pod_names)
    span = f"{max(MIN_RANGE_SECONDS, window_seconds):g}s"

    def rate(name: str) -> str:
        return f"sum(rate({name}{{{sel}}}[{span}]))"

    def increase(name: str) -> str:
        return f"sum(increase({name}{{{sel}}}[{span}]))"

    def quantile_of(*names: str) -> str:
        # `or` keeps the first name an engine exports (vLLM >= 0.11 exports both ITL names: count one).
        buckets = " or ".join(f"sum by (le) (rate({n}_bucket{{{sel}}}[{span}]))" for n in names)
        return f"histogram_quantile({quantile:g}, {buckets})"

    def first_of(kind: str, *names: str) -> str:
        return " or ".join(f"sum(increase({n}_{kind}{{{sel}}}[{span}]))" for n in names)

    parts = {
        "finished_per_second": rate(FINISHED),
        # Requests in flight (running + waiting) that grew over the window arrived without finishing yet.
        "in_flight_change": f'sum(delta({{__name__=~"{RUNNING}|{WAITING}",{sel}}}[{span}]))',
        "prefilled_per_second": rate(f"{TTFT}_count"),
        "prompt_tokens_per_second": rate(PROMPT_TOKENS),
        "generation_tokens_per_second": rate(GENERATION_TOKENS),
        "running_per_replica": f"avg(avg_over_time({RUNNING}{{{sel}}}[{span}]))",
        "ttft_quantile": quantile_of(TTFT),
        "ttft_count": increase(f"{TTFT}_count"),
        "ttft_sum": increase(f"{TTFT}_sum"),
        "itl_quantile": quantile_of(ITL, ITL_LEGACY),
        "itl_count": f"({first_of('count', ITL, ITL_LEGACY)})",
        "itl_sum": f"({first_of('sum', ITL, ITL_LEGACY)})",
    }
    return " or ".join(_tag(expression, signal) for signal, expression in parts.items())


@dataclass(frozen=True)
class SloWindows:
    """The demand model's two windows as Prometheus ranges, and the quantile the SLO bounds."""

    stable_seconds: float
    short_seconds: float
    quantile: float


def signals_from_vector(series: list[dict[str, Any]]) -> dict[str, float]:
    """The instant vector as {signal: value}; NaN (a quantile of no observations) and junk are left out."""
    values: dict[str, float] = {}
    for item in series:
        signal = item.get("metric", {}).get("signal")
        value = item.get("value")
        if not isinstance(signal, str) or not isinstance(value, list | tuple) or len(value) != 2:
            continue
        try:
            number = float(value[1])
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            values[signal] = number
    return values


def rates_from_signals(
    values: dict[str, float], window_seconds: float, quantile: float
) -> WindowRates | None:
    """What the fleet did over the window, in the demand model's terms; None when Prometheus had no counters
    for these pods yet (no finished or prefilled request rate: nothing to size on)."""
    if "finished_per_second" not in values or "prefilled_per_second" not in values:
        return None
    span = max(MIN_RANGE_SECONDS, window_seconds)
    finished = max(0.0, values["finished_per_second"])
    prefilled = max(0.0, values["prefilled_per_second"])
    arrivals = max(0.0, finished + values.get("in_flight_change", 0.0) / span)
    prompt = values.get("prompt_tokens_per_second")
    generated = values.get("generation_tokens_per_second")

    def summary(prefix: str) -> QuantileSummary | None:
        count = values.get(f"{prefix}_count")
        if count is None or count <= 0:
            return None
        value = values.get(f"{prefix}_quantile")
        total = values.get(f"{prefix}_sum")
        return QuantileSummary(
            count=count,
            mean=total / count if total is not None else None,
            quantiles=((quantile, value),) if value is not None else (),
        )

    return WindowRates(
        span_seconds=span,
        arrivals_per_second=arrivals,
        finished_per_second=finished,
        prefilled_per_second=prefilled,
        prompt_tokens_per_request=prompt / prefilled if prompt is not None and prefilled > 0 else None,
        output_tokens_per_request=generated / finished if generated is not None and finished > 0 else None,
        time_to_first_token=summary("ttft"),
        inter_token_latency=summary("itl"),
        queue_time=None,
        running_per_replica=max(0.0, values.get("running_per_replica", 0.0)),
    )
