"""Reads the engines' saturation signals: direct scrapes of every ready replica, or a Prometheus query
(parsed and aggregated by llmserve.engine_metrics, as the gateway's load scrape is)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from llmserve.autoscale.histogram import Histogram
from llmserve.autoscale.policy import ReplicaMetrics
from llmserve.autoscale.promql import SloWindows, rates_from_signals, signals_from_vector, window_query
from llmserve.autoscale.window import EngineCounters, WindowRates
from llmserve.engine_metrics import (
    GAUGES,
    EngineLoad,
    EnginePage,
    MetricsFormatError,
    engine_load,
    read_page,
)
from llmserve.engine_metrics_names import (
    FINISHED,
    GENERATION_TOKENS,
    ITL,
    ITL_LEGACY,
    PROMPT_TOKENS,
    QUEUE_TIME,
    TTFT,
)

log = logging.getLogger(__name__)


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


def _counters(page: EnginePage) -> EngineCounters | None:
    """The cumulative counters and histograms, when the page has them (vLLM always exports them)."""
    finished, prompt_tokens = page.total(f"{FINISHED}_total"), page.total(f"{PROMPT_TOKENS}_total")
    if finished is None or prompt_tokens is None:
        return None

    def histogram(name: str) -> Histogram | None:
        return _histogram(page.buckets.get(name, {}), page.total(f"{name}_sum") or 0.0)

    return EngineCounters(
        requests_finished=finished,
        prompt_tokens=prompt_tokens,
        generation_tokens=page.total(f"{GENERATION_TOKENS}_total") or 0.0,
        time_to_first_token=histogram(TTFT),
        inter_token_latency=histogram(ITL) or histogram(ITL_LEGACY),
        queue_time=histogram(QUEUE_TIME),
    )


def replica_metrics(load: EngineLoad, counters: EngineCounters | None = None) -> ReplicaMetrics:
    return ReplicaMetrics(
        requests_waiting=load.requests_waiting,
        requests_running=load.requests_running,
        kv_cache_fraction=load.kv_cache_fraction,
        counters=counters,
    )


def parse_engine_metrics(text: str) -> ReplicaMetrics:
    """The scheduler signals and counters from one engine's Prometheus text exposition."""
    page = read_page(text)
    return replica_metrics(page.load(), _counters(page))


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
        self._pages = PageMemo()

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
        text = response.text
        return self._pages.parsed(
            (target.namespace, target.pod_name, target.pod_ip), text, parse_engine_metrics
        )

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


class PageMemo:
    """The metrics parsed from each replica's last page, kept while its vLLM samples do not change.

    An idle engine serves the same samples scrape after scrape (only process_* and python_* series move),
    and parsing the page was about half of the autoscaler's CPU at hundreds of replicas. A replica not
    scraped for `keep_seconds` is forgotten. The clock is injectable for tests."""

    def __init__(self, keep_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._keep_seconds, self._clock = keep_seconds, clock
        self._entries: dict[tuple[str, ...], tuple[bytes, ReplicaMetrics, float]] = {}
        self._pruned_at = clock()

    @staticmethod
    def _digest(text: str) -> bytes:
        samples = "\n".join(line for line in text.splitlines() if line.startswith("vllm:"))
        return hashlib.blake2b(samples.encode(), digest_size=16).digest()

    def parsed(
        self, key: tuple[str, ...], text: str, parse: Callable[[str], ReplicaMetrics]
    ) -> ReplicaMetrics:
        """`parse(text)`, or what it gave for this replica's last page when the vLLM samples are the same."""
        now, digest = self._clock(), self._digest(text)
        entry = self._entries.get(key)
        metrics = entry[1] if entry is not None and entry[0] == digest else parse(text)
        self._entries[key] = (digest, metrics, now)
        if now - self._pruned_at > self._keep_seconds / 5:
            self._pruned_at = now
            for stale in [k for k, kept in self._entries.items() if now - kept[2] > self._keep_seconds]:
                del self._entries[stale]
        return metrics

    def __len__(self) -> int:
        return len(self._entries)


def _describe(err: BaseException) -> str:
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code}"
    return f"{type(err).__name__}: {err}".rstrip(": ")


def prometheus_query(namespace: str, pod_names: Iterable[str]) -> str:
    """One instant query for all four signals of the given pods."""
    names = "|".join(re.escape(s) for s in GAUGES)
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
            result.metrics[target.pod_name] = replica_metrics(engine_load(samples))
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

    async def slo_windows(
        self, targets: list[Target], windows: SloWindows
    ) -> tuple[WindowRates | None, WindowRates | None] | None:
        """The demand model's (stable, short) windows from rate()/histogram_quantile() queries
        (llmserve.autoscale.promql); None when Prometheus fails (logged; the gauges still decide)."""
        if not targets:
            return None
        answers: list[WindowRates | None] = []
        for seconds in (windows.stable_seconds, windows.short_seconds):
            query = window_query(
                targets[0].namespace, (t.pod_name for t in targets), seconds, windows.quantile
            )
            try:
                series = await asyncio.to_thread(self._client.custom_query, query)
            except Exception as err:  # the client raises requests' and its own errors; all mean "no data"
                log.warning("event=prometheus_slo_query_failed url=%s error=%r", self.url, _describe(err))
                return None
            answers.append(rates_from_signals(signals_from_vector(list(series)), seconds, windows.quantile))
        return answers[0], answers[1]

    def close(self) -> None:
        """Closes the client's pooled HTTP session (blocking: call it in a thread)."""
        session = getattr(self._client, "_session", None)
        if session is not None:
            session.close()
