"""The live map of served model names to backends, fed by discovery sources and read per request."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """One replica that serves a model: a base URL plus optional credentials (rented instances)."""

    url: str  # base URL without /v1, e.g. http://10.244.1.5:8000
    # Sent upstream, e.g. the engine key or an instance's Authorization; kept out of repr() so a logged
    # Backend never shows a credential.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Sent instead when the replica refuses `headers` (401/403): the key derived from the previous
    # engine-key master, which replicas started before a rotation still hold until their pods roll.
    fallback_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    source: str = "pod"  # pod | static | burst
    batch_slots: int | None = None  # the engine's --max-num-seqs when known (LLMServe args, static file)
    # The TLS a rented instance must present (its pinned certificate or its provider's proxy); None: default.
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """Metric label: host:port, never the credentials."""
        return self.url.split("://", 1)[-1].rstrip("/")


@dataclass(frozen=True)
class ModelRoute:
    """Where requests for one served name go, and which LLMServe to scale up when none is ready."""

    served_name: str
    backends: tuple[Backend, ...] = ()
    namespace: str | None = None
    llmserve: str | None = None  # None when nothing can be scaled (static backends)
    # The LLMServe's TTFT target (autoscaling.slo): requests queued longer than this go after the others
    # (gateway queue, queue.py). None: first come, first served.
    late_after_seconds: float | None = None


@dataclass
class BackendLoad:
    """What the gateway knows about one backend's load: its own count plus the last scrape."""

    outstanding: int = 0
    scraped_running: float = 0.0
    scraped_waiting: float = 0.0
    kv_usage_fraction: float = 0.0
    others_in_flight: float = 0.0  # engine's running + waiting minus our own in-flight, at the last scrape
    ejected_until: float = 0.0  # monotonic time; connect failures keep a backend out of rotation briefly
    consecutive_failures: int = 0  # connect failures and frozen answers since the last answer (health.py)


@dataclass
class _Waiters:
    futures: set[asyncio.Future[None]] = field(default_factory=set)


def _owner(route: ModelRoute) -> tuple[str | None, str | None]:
    return route.namespace, route.llmserve


class Registry:
    """Models and backends, merged over sources (Kubernetes, a static file, later burst instances).

    Each source replaces its whole view at once; a model's backends are the union over sources.
    Requests waiting for a model with no backend are woken when one appears.
    """

    def __init__(self) -> None:
        self._by_source: dict[str, dict[str, ModelRoute]] = {}
        self._routes: dict[str, ModelRoute] = {}
        self.loads: dict[str, BackendLoad] = {}
        self._waiters: dict[str, _Waiters] = {}
        self.synced_sources: set[str] = set()

    def replace(self, source: str, routes: Iterable[ModelRoute]) -> None:
        self._by_source[source] = {route.served_name: route for route in routes}
        self.synced_sources.add(source)
        self._rebuild()

    def _rebuild(self) -> None:
        merged: dict[str, ModelRoute] = {}
        for routes in self._by_source.values():
            for name, route in routes.items():
                previous = merged.get(name)
                if previous is None:
                    merged[name] = route
                    continue
                if _owner(previous) != _owner(route) and None not in (previous.llmserve, route.llmserve):
                    # Two LLMServes never share a served name: the first source's keeps it.
                    log.warning(
                        "event=served_name_conflict model=%s kept=%s/%s ignored=%s/%s",
                        name, *_owner(previous), *_owner(route),
                    )  # fmt: skip
                    continue
                backends = previous.backends + tuple(b for b in route.backends if b not in previous.backends)
                merged[name] = ModelRoute(
                    name,
                    backends,
                    previous.namespace or route.namespace,
                    previous.llmserve or route.llmserve,
                    previous.late_after_seconds or route.late_after_seconds,
                )
        before = {name: len(route.backends) for name, route in self._routes.items()}
        self._routes = merged
        live = {backend.url for route in merged.values() for backend in route.backends}
        for url in list(self.loads):
            if url not in live and self.loads[url].outstanding == 0:
                del self.loads[url]
        for url in live:
            self.loads.setdefault(url, BackendLoad())
        for name, route in merged.items():
            if len(route.backends) != before.get(name, -1):
                log.info("event=model_backends model=%s backends=%d", name, len(route.backends))
            if route.backends:
                self._wake(name)
        for name in before.keys() - merged.keys():
            log.info("event=model_removed model=%s", name)

    def route(self, served_name: str) -> ModelRoute | None:
        return self._routes.get(served_name)

    @property
    def routes(self) -> Mapping[str, ModelRoute]:
        return self._routes

    def load(self, backend: Backend) -> BackendLoad:
        return self.loads.setdefault(backend.url, BackendLoad())

    async def wait_for_backends(self, served_name: str) -> None:
        """Returns once the model has at least one backend (the caller bounds the wait)."""
        route = self._routes.get(served_name)
        if route is not None and route.backends:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(served_name, _Waiters())
        waiters.futures.add(future)
        try:
            await future
        finally:
            waiters.futures.discard(future)
            if not waiters.futures:
                self._waiters.pop(served_name, None)

    def _wake(self, served_name: str) -> None:
        waiters = self._waiters.get(served_name)
        if waiters is None:
            return
        for future in waiters.futures:
            if not future.done():
                future.set_result(None)
