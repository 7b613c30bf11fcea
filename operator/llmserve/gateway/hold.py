"""Hold at zero: requests for a model with no ready replica ask for a scale-up and wait, boundedly."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from llmserve.gateway.errors import GatewayError
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.registry import ModelRoute, Registry

log = logging.getLogger(__name__)


class Scaler(Protocol):
    async def scale_from_zero(self, namespace: str, llmserve: str, model: str) -> None:
        """Makes sure the LLMServe asks for at least one replica."""


@dataclass(frozen=True)
class HoldSettings:
    timeout_seconds: float = 180.0  # how long one request may wait for a replica
    max_held_per_model: int = 256  # beyond this, new requests are refused at once
    retry_after_seconds: float = 10.0  # what a refused client is told
    rescale_interval_seconds: float = 10.0  # re-assert the scale-up while requests keep waiting


class Holder:
    def __init__(
        self,
        registry: Registry,
        scaler: Scaler | None,
        settings: HoldSettings,
        metrics: GatewayMetrics,
    ) -> None:
        self.registry, self.scaler, self.settings, self.metrics = registry, scaler, settings, metrics
        self._held: dict[str, int] = {}
        self._last_scale_request: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def held(self, model: str) -> int:
        return self._held.get(model, 0)

    async def wait_for_replica(self, route: ModelRoute) -> ModelRoute:
        """Returns the model's route once it has a backend; raises a 503 GatewayError when the wait
        queue is full or the wait times out."""
        if route.backends:
            return route
        model = route.served_name
        if self.held(model) >= self.settings.max_held_per_model:
            raise GatewayError(
                503,
                f"Model {model!r} has no ready replica and {self.held(model)} requests are already waiting "
                "for it to scale up; retry later.",
                code="model_scaling_up",
                retry_after_seconds=self.settings.retry_after_seconds,
            )
        self._held[model] = self.held(model) + 1
        held_gauge = self.metrics.held.labels(model, route.namespace or "", route.llmserve or "")
        held_gauge.inc()
        started = time.monotonic()
        log.info("event=request_held model=%s held=%d", model, self._held[model])
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                while True:
                    self._request_scale_up(route)
                    try:
                        async with asyncio.timeout(self.settings.rescale_interval_seconds):
                            await self.registry.wait_for_backends(model)
                        break
                    except TimeoutError:
                        current = self.registry.route(model)
                        route = current or route
        except TimeoutError:
            raise GatewayError(
                503,
                f"Model {model!r} has no ready replica after waiting {self.settings.timeout_seconds:g}s "
                "for it to scale up; retry later.",
                code="model_scaling_up",
                retry_after_seconds=self.settings.retry_after_seconds,
            ) from None
        finally:
            self._held[model] -= 1
            if not self._held[model]:
                del self._held[model]
            held_gauge.dec()
            self.metrics.hold_seconds.labels(model).observe(time.monotonic() - started)
        log.info("event=request_released model=%s waited_seconds=%.2f", model, time.monotonic() - started)
        return self.registry.route(model) or route

    def _request_scale_up(self, route: ModelRoute) -> None:
        if self.scaler is None or route.namespace is None or route.llmserve is None:
            return
        model, now = route.served_name, time.monotonic()
        last = self._last_scale_request.get(model)
        if last is not None and now - last < self.settings.rescale_interval_seconds:
            return
        self._last_scale_request[model] = now
        task = asyncio.create_task(self._scale(route.namespace, route.llmserve, model))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scale(self, namespace: str, llmserve: str, model: str) -> None:
        assert self.scaler is not None
        try:
            await self.scaler.scale_from_zero(namespace, llmserve, model)
        except Exception as err:  # the next held request (or the re-assert interval) tries again
            self._last_scale_request.pop(model, None)
            log.warning(
                "event=scale_from_zero_failed namespace=%s llmserve=%s error=%r", namespace, llmserve, err
            )
