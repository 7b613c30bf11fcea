"""The CapacityFit check at apply time: a condition and an Event saying whether the model and its batch fit."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from llmserve import kube
from llmserve.api.base import Condition, now_utc
from llmserve.controller import metrics
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


async def cluster_gpu_products() -> list[str]:
    """The GPU products the cluster's nodes carry (GPU feature discovery's label); [] if unreadable."""
    try:
        nodes = await kube.retry(
            lambda: kube.list_objects("Node", label_selector=GPU_PRODUCT_LABEL), attempts=3
        )
    except kube.KubeError as err:
        log.warning("event=capacity_fit_nodes_unreadable status=%s error=%r", err.status, str(err))
        return []
    return [n["metadata"]["labels"][GPU_PRODUCT_LABEL] for n in nodes]


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
        kopf.event(body, type="Warning", reason=fit.reason, message=fit.message)
    elif fit.status == "Unknown":
        kopf.event(body, type="Normal", reason=f"CapacityFit{fit.reason}", message=fit.message)
