"""The gateway's count of requests put on a full replica while another had room, against the ground truth."""

from __future__ import annotations

import random
from typing import cast

import aiohttp

from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.proxy import Proxy, ProxySettings
from llmserve.gateway.registry import Backend, BackendLoad, ModelRoute, Registry
from llmserve.gateway.routing import Policy

SLOTS = 8
# (own in-flight, scraped running, scraped waiting, KV use) per replica, as one gateway saw a 7-replica
# fleet under 48 streaming users with a 1 s scrape: r1 and r3 are full by its exact count (r3 looked
# nearly idle at the last scrape), every other replica has a free slot.
SNAPSHOT = [(7, 7, 0, 0.05), (8, 8, 0, 0.06), (6, 6, 0, 0.04), (8, 1, 0, 0.01), (7, 8, 1, 0.06),
            (5, 5, 0, 0.04), (7, 7, 0, 0.05)]  # fmt: skip
FULL = {"http://10.0.0.1:8000", "http://10.0.0.3:8000"}


def proxy_on_snapshot(policy: Policy) -> tuple[Proxy, ModelRoute, GatewayMetrics]:
    backends = tuple(Backend(f"http://10.0.0.{i}:8000", batch_slots=SLOTS) for i in range(len(SNAPSHOT)))
    registry = Registry()
    route = ModelRoute("llama", backends)
    registry.replace("static", [route])
    for backend, (own, running, waiting, kv) in zip(backends, SNAPSHOT, strict=True):
        registry.loads[backend.url] = BackendLoad(own, running, waiting, kv, others_in_flight=0.0)
    metrics = GatewayMetrics()
    # pick() never touches the session: routing is decided before any connection is made.
    proxy = Proxy(registry, cast(aiohttp.ClientSession, None), ProxySettings(policy=policy), metrics,
                  rng=random.Random(7))  # fmt: skip
    return proxy, route, metrics


def decisions(metrics: GatewayMetrics, outcome: str) -> float:
    labels = {"model": "llama", "outcome": outcome}
    return metrics.registry.get_sample_value("llmserve_gateway_routing_decisions_total", labels) or 0.0


def test_the_gateway_counts_exactly_the_old_routers_placements_on_full_replicas() -> None:
    proxy, route, metrics = proxy_on_snapshot(Policy.POWER_OF_TWO)
    picks = [proxy.pick(route, set()) for _ in range(500)]
    on_full = sum(1 for backend in picks if backend is not None and backend.url in FULL)
    assert on_full > 50  # the stale scrape makes r3 look idle to the old router
    assert decisions(metrics, "on_full") == on_full
    assert decisions(metrics, "placed") == 500 - on_full


def test_the_default_and_least_load_routers_never_place_on_a_full_replica_and_the_count_stays_zero() -> None:
    for policy in (Policy.PREFIX, Policy.LEAST_LOAD):
        proxy, route, metrics = proxy_on_snapshot(policy)
        rng = random.Random(3)
        picks = [proxy.pick(route, set(), affinity_key=rng.getrandbits(64)) for _ in range(500)]
        assert not any(backend is not None and backend.url in FULL for backend in picks)
        assert decisions(metrics, "on_full") == 0
        assert decisions(metrics, "placed") + decisions(metrics, "affine") == 500
