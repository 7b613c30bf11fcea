"""Scrapes each backend's vLLM /metrics for queue depth, running requests and KV-cache use
(parsed and aggregated by llmserve.engine_metrics, as the autoscaler's collection is)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from llmserve.engine_metrics import MetricsFormatError, parse_engine_load
from llmserve.gateway.backend_safety import describe_error
from llmserve.gateway.health import record_success
from llmserve.gateway.registry import Backend, Registry

log = logging.getLogger(__name__)


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
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            if backend.url not in self._failing:
                self._failing.add(backend.url)
                log.info("event=scrape_failed backend=%s error=%r", backend.label, describe_error(err))
            return
        self._failing.discard(backend.url)
        if record_success(self.registry.load(backend)):  # the probe that brings an ejected backend back
            log.info("event=backend_back backend=%s via=scrape", backend.label)
        try:
            load = parse_engine_load(text)
        except MetricsFormatError:
            return  # it answered (so it is alive) but is no vLLM engine: its load stays unknown
        state = self.registry.load(backend)
        state.scraped_running = load.requests_running
        state.scraped_waiting = load.requests_waiting
        state.kv_usage_fraction = load.kv_cache_fraction or 0.0
        # What other clients (other gateway replicas, direct callers) have there: this gateway's own
        # count is exact and current, the rest is only known as of this scrape.
        in_engine = load.requests_running + load.requests_waiting
        state.others_in_flight = max(0.0, in_engine - state.outstanding)
