"""Scrapes each backend's vLLM /metrics for queue depth, running requests and KV-cache use."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from llmserve.engine_metrics_names import KV_CACHE, KV_CACHE_LEGACY, RUNNING, WAITING
from llmserve.gateway.backend_safety import describe_error
from llmserve.gateway.health import record_success
from llmserve.gateway.registry import Backend, Registry

log = logging.getLogger(__name__)

KV_USAGE = (KV_CACHE, KV_CACHE_LEGACY)  # newer name first (engine_metrics_names.py: which vLLM has which)


@dataclass(frozen=True)
class EngineLoad:
    running: float
    waiting: float
    kv_usage_fraction: float


def parse_engine_metrics(text: str) -> EngineLoad | None:
    """Sums each gauge over its label sets (one per engine); None when the text has no vLLM gauges."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, _, rest = line.partition("{")
        if not rest:
            name, _, rest = line.partition(" ")
        if name not in (WAITING, RUNNING, *KV_USAGE):
            continue
        try:
            value = float(rest.rsplit("}", 1)[-1].split()[0])
        except (ValueError, IndexError):
            continue
        sums[name] = sums.get(name, 0.0) + value
    if WAITING not in sums and RUNNING not in sums:
        return None
    kv = next((sums[name] for name in KV_USAGE if name in sums), 0.0)
    return EngineLoad(sums.get(RUNNING, 0.0), sums.get(WAITING, 0.0), min(max(kv, 0.0), 1.0))


class Scraper:
    """Every `interval_seconds`, reads all backends' /metrics concurrently and updates their load."""

    def __init__(self, registry: Registry, session: aiohttp.ClientSession, interval_seconds: float) -> None:
        self.registry, self.session, self.interval_seconds = registry, session, interval_seconds
        self._failing: set[str] = set()

    async def run(self) -> None:
        while True:
            backends = {b.url: b for route in self.registry.routes.values() for b in route.backends}
            await asyncio.gather(*(self._scrape(backend) for backend in backends.values()))
            await asyncio.sleep(self.interval_seconds)

    async def _scrape(self, backend: Backend) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.interval_seconds))
        try:
            async with self.session.get(
                backend.url.rstrip("/") + "/metrics",
                headers=dict(backend.headers),
                timeout=timeout,
                ssl=backend.tls if backend.tls is not None else True,
            ) as resp:
                resp.raise_for_status()
                load = parse_engine_metrics(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            if backend.url not in self._failing:
                self._failing.add(backend.url)
                log.info("event=scrape_failed backend=%s error=%r", backend.label, describe_error(err))
            return
        self._failing.discard(backend.url)
        if record_success(self.registry.load(backend)):  # the probe that brings an ejected backend back
            log.info("event=backend_back backend=%s via=scrape", backend.label)
        if load is None:
            return
        state = self.registry.load(backend)
        state.scraped_running = load.running
        state.scraped_waiting = load.waiting
        state.kv_usage_fraction = load.kv_usage_fraction
        # What other clients (other gateway replicas, direct callers) have there: this gateway's own
        # count is exact and current, the rest is only known as of this scrape.
        state.others_in_flight = max(0.0, load.running + load.waiting - state.outstanding)
