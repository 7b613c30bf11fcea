"""Reads the engines' saturation signals: direct scrapes of every ready replica, or a Prometheus query."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmserve.autoscale.histogram import Histogram
from llmserve.autoscale.policy import ReplicaMetrics
from llmserve.autoscale.window import EngineCounters
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

log = logging.getLogger(__name__)

# The names and which vLLM releases export them: engine_metrics_names.py (the legacy ones are fallbacks).
SIGNALS = (WAITING, RUNNING, KV_CACHE, KV_CACHE_LEGACY)
# Counters and histograms for arrivals, the token mix and latency (autoscaling.slo).
COUNTERS = (FINISHED, PROMPT_TOKENS, GENERATION_TOKENS)
HISTOGRAMS = (TTFT, ITL, ITL_LEGACY, QUEUE_TIME)

# Only these lines are handed to the parser: a vLLM /metrics page is mostly series we do not need.
_SIGNAL_LINE = re.compile(
    r"^(# (TYPE|HELP) )?("
    + "|".join(re.escape(s) for s in SIGNALS)
    + r"|(?:"
    + "|".join(re.escape(s) for s in (*COUNTERS, *HISTOGRAMS))
    + r")(?:_total|_bucket|_sum|_count)?)[ {]"
)


class MetricsFormatError(ValueError):
    """The page was read but does not carry vLLM's scheduler gauges."""


@dataclass(frozen=True)
class Target:
    """One ready replica: how to reach it directly and how Prometheus labels it."""

    pod_name: str
    namespace: str
    pod_ip: str


@dataclass
class CollectResult:
    """Signals of the replicas that answered, and why the others did not (by pod name)."""

    metrics: dict[str, ReplicaMetrics] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class Collector(Protocol):
    async def collect(self, targets: list[Target]) -> CollectResult: ...


def _histogram(buckets: dict[float, float], total: float) -> Histogram | None:
    """A Histogram from `le -> cumulative count` (+Inf included), summed over data-parallel series."""
    if math.inf not in buckets:
        return None
    bounds = tuple(sorted(b for b in buckets if b != math.inf))
    return Histogram(bounds, tuple(buckets[b] for b in (*bounds, math.inf)), total)


def _counters(
    samples: dict[str, list[float]], buckets: dict[str, dict[float, float]]
) -> EngineCounters | None:
    """The cumulative counters and histograms, when the page has them (vLLM always exports them)."""
    if f"{FINISHED}_total" not in samples or f"{PROMPT_TOKENS}_total" not in samples:
        return None

    def histogram(name: str) -> Histogram | None:
        return _histogram(buckets.get(name, {}), sum(samples.get(f"{name}_sum", [])))

    return EngineCounters(
        requests_finished=sum(samples[f"{FINISHED}_total"]),
        prompt_tokens=sum(samples[f"{PROMPT_TOKENS}_total"]),
        generation_tokens=sum(samples.get(f"{GENERATION_TOKENS}_total", [])),
        time_to_first_token=histogram(TTFT),
        inter_token_latency=histogram(ITL) or histogram(ITL_LEGACY),
        queue_time=histogram(QUEUE_TIME),
    )


def _combine(
    samples: dict[str, list[float]], buckets: dict[str, dict[float, float]] | None = None
) -> ReplicaMetrics:
    """Data-parallel engines export one series each: queues and counters add up, KV use averages."""
    if not samples.get(WAITING):
        raise MetricsFormatError(f"no {WAITING} gauge: is this a vLLM engine?")
    kv = samples.get(KV_CACHE) or samples.get(KV_CACHE_LEGACY)
    return ReplicaMetrics(
        requests_waiting=sum(samples[WAITING]),
        requests_running=sum(samples.get(RUNNING, [])),
        kv_cache_fraction=min(1.0, max(0.0, sum(kv) / len(kv))) if kv else None,
        counters=_counters(samples, buckets or {}),
    )


def parse_engine_metrics(text: str) -> ReplicaMetrics:
    """The scheduler signals from one engine's Prometheus text exposition."""
    wanted = "\n".join(line for line in text.splitlines() if _SIGNAL_LINE.match(line)) + "\n"
    samples: dict[str, list[float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if not math.isfinite(sample.value):
                    continue
                if sample.name.endswith("_bucket") and "le" in sample.labels:
                    per_le = buckets.setdefault(sample.name.removesuffix("_bucket"), {})
                    le = float(sample.labels["le"])
                    per_le[le] = per_le.get(le, 0.0) + sample.value
                elif not sample.name.endswith("_created"):
                    samples.setdefault(sample.name, []).append(float(sample.value))
    except ValueError as err:
        raise MetricsFormatError(f"unparsable metrics: {err}") from err
    return _combine(samples, buckets)


class DirectScraper:
    """Scrapes `http://<pod IP>:<port>/metrics` of every target at once, each with a short timeout."""

    def __init__(
        self,
        port: int,
        timeout_seconds: float = 1.0,
        max_concurrency: int = 64,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.port = port
        self.timeout_seconds = timeout_seconds
        self._client = client
        self._limit = asyncio.Semaphore(max_concurrency)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_seconds),
                # No idle connections kept: every replica is its own origin, and httpx checks each pooled
                # connection on every request, so at hundreds of replicas the pool cost more CPU than a
                # fresh TCP connect per scrape (no TLS; one scrape per replica per interval).
                limits=httpx.Limits(max_keepalive_connections=0),
                trust_env=False,  # engines are in-cluster: never through a proxy
            )
        return self._client

    async def _scrape(self, target: Target) -> ReplicaMetrics:
        host = f"[{target.pod_ip}]" if ":" in target.pod_ip else target.pod_ip
        async with self._limit:
            response = await self._http().get(f"http://{host}:{self.port}/metrics")
        response.raise_for_status()
        return parse_engine_metrics(response.text)

    async def collect(self, targets: list[Target]) -> CollectResult:
        answers = await asyncio.gather(*(self._scrape(t) for t in targets), return_exceptions=True)
        result = CollectResult()
        for target, answer in zip(targets, answers, strict=True):
            if isinstance(answer, ReplicaMetrics):
                result.metrics[target.pod_name] = answer
            elif isinstance(answer, Exception):
                result.errors[target.pod_name] = _describe(answer)
            else:
                raise answer  # CancelledError and friends
        return result

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _describe(err: BaseException) -> str:
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code}"
    return f"{type(err).__name__}: {err}".rstrip(": ")


def prometheus_query(namespace: str, pod_names: Iterable[str]) -> str:
    """One instant query for all four signals of the given pods."""
    names = "|".join(re.escape(s) for s in SIGNALS)
    pods = "|".join(re.escape(p) for p in sorted(pod_names))
    return f'{{__name__=~"{names}",namespace="{namespace}",pod=~"{pods}"}}'


def metrics_from_prometheus(series: list[dict[str, Any]], targets: list[Target]) -> CollectResult:
    """Groups an instant-query vector by pod; a ready pod Prometheus has no series for is an error."""
    by_pod: dict[str, dict[str, list[float]]] = {}
    for item in series:
        labels, value = item.get("metric", {}), item.get("value", [None, "nan"])
        number = float(value[1])
        if math.isfinite(number):
            by_pod.setdefault(labels.get("pod", ""), {}).setdefault(labels.get("__name__", ""), []).append(
                number
            )
    result = CollectResult()
    for target in targets:
        samples = by_pod.get(target.pod_name)
        try:
            if samples is None:
                raise MetricsFormatError("no series in Prometheus for this pod")
            result.metrics[target.pod_name] = _combine(samples)
        except MetricsFormatError as err:
            result.errors[target.pod_name] = str(err)
    return result


class PrometheusCollector:
    """Reads the same signals from a Prometheus server (prometheus-api-client is sync: run in a thread)."""

    def __init__(self, url: str, timeout_seconds: float = 2.0) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url
        # One quick retry: a stale answer is worse than none when the next interval is seconds away.
        retry = Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504))
        self._client = PrometheusConnect(url=url, retry=retry, timeout=timeout_seconds)

    async def collect(self, targets: list[Target]) -> CollectResult:
        if not targets:
            return CollectResult()
        query = prometheus_query(targets[0].namespace, (t.pod_name for t in targets))
        try:
            series = await asyncio.to_thread(self._client.custom_query, query)
        except Exception as err:  # the client raises requests' and its own errors; all mean "no data"
            message = f"Prometheus at {self.url} failed: {_describe(err)}"
            return CollectResult(errors={t.pod_name: message for t in targets})
        return metrics_from_prometheus(list(series), targets)
