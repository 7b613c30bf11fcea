"""Rented burst replicas as the autoscaler sees them: capacity that serves, scraped like local replicas.

A rented replica stands in for a local replica stuck Unschedulable, so the autoscaler counts it as
ready (not as missing capacity) and averages its queue and KV-cache signals with the local ones.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace

import httpx

from llmserve import kube
from llmserve.api.burstpool import BurstPoolStatus
from llmserve.autoscale.collect import parse_engine_metrics
from llmserve.autoscale.policy import ReplicaMetrics, Snapshot
from llmserve.burst.backends import BurstBackend, serving_backends
from llmserve.controller.burst_launch import read_access

log = logging.getLogger(__name__)


@dataclass
class BurstCapacity:
    ready: int = 0  # serving, non-draining rented replicas of the model
    metrics: list[ReplicaMetrics] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # instance name -> why it was not scraped


def with_burst(snapshot: Snapshot, burst: BurstCapacity) -> Snapshot:
    """The snapshot with rented replicas counted as ready capacity, in place of Unschedulable local ones."""
    if burst.ready == 0:
        return snapshot
    # The demand model reads the local engines' counters only: while rented replicas serve, the gauge
    # policy decides (docs/burst.md, "Autoscaler"). Every other field carries over as it is.
    return replace(
        snapshot,
        ready_replicas=snapshot.ready_replicas + burst.ready,
        unschedulable_replicas=max(0, snapshot.unschedulable_replicas - burst.ready),
        replicas=(*snapshot.replicas, *burst.metrics),
        unscraped_replicas=snapshot.unscraped_replicas + burst.ready - len(burst.metrics),
        demand=None,
    )


async def _scrape(backend: BurstBackend, secrets_namespace: str, timeout_seconds: float) -> ReplicaMetrics:
    access = await read_access(secrets_namespace, backend.instance)
    if access is None:
        raise ValueError("no usable instance Secret")
    async with httpx.AsyncClient(verify=access.ssl_context, timeout=timeout_seconds, trust_env=False) as http:
        response = await http.get(
            backend.url.rstrip("/") + "/metrics", headers={"Authorization": f"Bearer {access.api_key}"}
        )
    response.raise_for_status()
    return parse_engine_metrics(response.text)


async def burst_capacity(
    owner: str, pool: str, secrets_namespace: str, timeout_seconds: float = 2.0
) -> BurstCapacity:
    """The serving rented replicas of `owner` ("<namespace>/<name>") in BurstPool `pool`, scraped."""
    body = await kube.retry(lambda: kube.get("BurstPool", None, pool))
    if body is None:
        return BurstCapacity()
    status = BurstPoolStatus.model_validate(body.get("status") or {})
    backends = serving_backends([status]).get(owner, [])
    answers = await asyncio.gather(
        *(_scrape(b, secrets_namespace, timeout_seconds) for b in backends), return_exceptions=True
    )
    out = BurstCapacity(ready=len(backends))
    for backend, answer in zip(backends, answers, strict=True):
        if isinstance(answer, ReplicaMetrics):
            out.metrics.append(answer)
        elif isinstance(answer, Exception):  # the message names the type only: a URL may carry an id
            out.errors[backend.instance] = type(answer).__name__
        else:
            raise answer
    return out
