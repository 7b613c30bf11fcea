"""Turns LLMServes, their pods and namespace labels into the burst Demand of each model (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from llmserve.api.burstpool import BurstPoolSpec, LabelSelector
from llmserve.api.llmserve import ENGINE_PORT, LLMServeSpec
from llmserve.burst.budget import parse_time
from llmserve.burst.planner import Demand
from llmserve.controller.status import summarize_pods
from llmserve.render.engine import engine_args, engine_image

Obj = dict[str, Any]


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector selects everything."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
        if req.operator == "In" and labels.get(req.key) not in req.values:
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
    return True


def unschedulable_for(pods: Iterable[Obj], now: datetime, at_least_seconds: float) -> int:
    """Pods Pending as Unschedulable (PodScheduled=False) for at least this long, by the condition's time."""
    count = 0
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for cond in (pod.get("status") or {}).get("conditions", []) or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                since = parse_time(cond.get("lastTransitionTime"))
                if since is not None and (now - since).total_seconds() >= at_least_seconds:
                    count += 1
    return count


def not_allowed_message(pool_name: str, pool: BurstPoolSpec, namespace: str) -> str:
    selector = pool.allowed_namespaces.to_wire()
    return (
        f"BurstPool {pool_name} does not allow namespace {namespace} (allowedNamespaces: {selector}); "
        "no burst replicas are rented for this model"
    )


def demand_of(
    body: Obj,
    spec: LLMServeSpec,
    pods: Iterable[Obj],
    namespace_labels: Mapping[str, str],
    pool: BurstPoolSpec,
    now: datetime,
) -> Demand:
    """The Demand of one LLMServe that bursts into `pool` (spec.burst is set)."""
    assert spec.burst is not None
    meta = body["metadata"]
    pods = list(pods)
    summary = summarize_pods(pods)
    return Demand(
        owner=f"{meta['namespace']}/{meta['name']}",
        max_replicas=spec.burst.max_replicas,
        unschedulable_replicas=unschedulable_for(pods, now, spec.burst.unschedulable_seconds),
        local_ready_replicas=summary.ready,
        local_desired_replicas=spec.desired_replicas(),
        scale_in_delay_seconds=spec.burst.scale_in_delay_seconds,
        allowed=selects(pool.allowed_namespaces, namespace_labels),
        image=engine_image(spec),
        args=tuple(engine_args(meta["name"], spec)),
        env={e.name: e.value for e in spec.engine.env},
        port=ENGINE_PORT,
        model=spec.model.name,
        served_model_name=spec.served_name(meta["name"]),
        extra_args=(*(("--revision", spec.model.revision) if spec.model.revision else ()), *spec.engine.args),
        hf_token_secret=(
            (spec.model.hf_token_secret.name, spec.model.hf_token_secret.key)
            if spec.model.hf_token_secret is not None
            else None
        ),
    )
