"""The CapacityFit check at apply time: a condition and an Event saying whether the model and its batch fit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from llmserve import kube
from llmserve.api.base import Condition, now_utc
from llmserve.controller import metrics, namespaces
from llmserve.controller.handlers import RESOURCE
from llmserve.controller.reconcile import parse_spec
from llmserve.controller.statusapply import apply_status, carry_transition_time
from llmserve.plan.specfit import CONDITION_TYPE, SpecFit, fit_for_spec

log = logging.getLogger(__name__)

Obj = dict[str, Any]
FIELD_MANAGER = "llmserve-capacityfit"


def fit_condition(fit: SpecFit, generation: int) -> Condition:
    return Condition(
        type=CONDITION_TYPE,
        status=fit.status,
        reason=fit.reason,
        message=fit.message,
        last_transition_time=now_utc(),
        observed_generation=generation,
    )


def _current(body: Obj) -> Obj:
    for raw in (body.get("status") or {}).get("conditions") or []:
        if raw.get("type") == CONDITION_TYPE:
            return dict(raw)
    return {}


GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


class CachedRead:
    """Remembers an answer for `ttl_seconds` and lets concurrent callers share one read; an unreadable
    answer (None) is not remembered, so the next caller asks again. The clock is injectable for tests."""

    def __init__(
        self,
        read: Callable[[], Awaitable[list[str] | None]],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self._ttl_seconds, self._clock = read, ttl_seconds, clock
        self._answer: tuple[float, list[str]] | None = None  # (clock time read, answer)
        self._lock: asyncio.Lock | None = None  # made on first use, inside the running loop

    async def get(self) -> list[str]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = self._clock()
            if self._answer is not None and now - self._answer[0] <= self._ttl_seconds:
                return list(self._answer[1])
            answer = await self._read()
            self._answer = (now, answer) if answer is not None else None
            return list(answer or [])


async def list_gpu_products() -> list[str] | None:
    """The GPU products the cluster's nodes carry (GPU feature discovery's label); None if unreadable."""
    try:
        nodes = await kube.retry(
            lambda: kube.list_objects("Node", label_selector=GPU_PRODUCT_LABEL), attempts=3
        )
    except kube.KubeError as err:
        log.warning("event=capacity_fit_nodes_unreadable status=%s error=%r", err.status, str(err))
        return None
    return [n["metadata"]["labels"][GPU_PRODUCT_LABEL] for n in nodes]


# Nodes change rarely, and listing them (whole Node objects) for every LLMServe applied was a Node list per
# object: one list serves every check for 30 s, and concurrent checks share it.
_gpu_products = CachedRead(list_gpu_products, ttl_seconds=30.0)


async def cluster_gpu_products() -> list[str]:
    """The GPU products the cluster's nodes carry, as read at most 30 s ago; [] if unreadable."""
    return await _gpu_products.get()


@kopf.on.resume(*RESOURCE, id="capacity-fit")
@kopf.on.create(*RESOURCE, id="capacity-fit")
@kopf.on.update(*RESOURCE, field="spec", id="capacity-fit")
async def check_capacity_fit(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    """Computes the fit from the spec alone (no GPU is needed), and never blocks the apply."""
    spec, _error = parse_spec(dict(body.get("spec", {})))
    if spec is None or namespace is None:
        return  # the reconciler reports InvalidSpec
    unpinned = spec.resources.gpu_product is None and spec.resources.gpu_memory is None
    fit = fit_for_spec(spec, await cluster_gpu_products() if unpinned else ())
    generation = int(body.get("metadata", {}).get("generation") or 0)
    previous = _current(dict(body))
    condition = carry_transition_time([previous] if previous else [], fit_condition(fit, generation))
    key = (namespace, name)
    if fit.result is not None:
        metrics.CAPACITY_FIT_FULL_SEQUENCES.labels(*key).set(fit.result.full_sequences)
        metrics.CAPACITY_FIT_BATCH_SLOTS.labels(*key).set(fit.result.max_num_seqs)
    wire = condition.to_wire()
    if {k: previous.get(k) for k in wire} == wire:
        return  # a resume with nothing new: no second Event for the same finding
    if not await apply_status(namespace, name, {"conditions": [wire]}, FIELD_MANAGER):
        return
    log.info(
        "event=capacity_fit namespace=%s llmserve=%s status=%s reason=%s",
        namespace,
        name,
        fit.status,
        fit.reason,
    )
    changed = (previous.get("status"), previous.get("reason"), previous.get("message")) != (
        fit.status, fit.reason, fit.message)  # fmt: skip
    if not changed:
        return
    if fit.status == "False":
        namespaces.post_event(body, type="Warning", reason=fit.reason, message=fit.message)
    elif fit.status == "Unknown":
        namespaces.post_event(body, type="Normal", reason=f"CapacityFit{fit.reason}", message=fit.message)
