"""Writes an LLMServe's status by server-side apply, one field manager per writer: the one way to write status.

Every loop that reports on an LLMServe owns a fixed set of status fields and conditions, and writes them
with `apply_status` under its own field manager:

| manager               | owns                                                                  |
|-----------------------|-----------------------------------------------------------------------|
| `llmserve-operator`   | replicas, desiredReplicas, readyReplicas, unschedulableReplicas, selector, endpoint, servedModelName, observedGeneration; conditions Ready, Progressing, Degraded |
| `llmserve-autoscaler` | autoscaling (observations and the policy's memory); conditions AbleToScale, ScalingActive, ScalingLimited |
| `llmserve-burst`      | (the burst controller's fields and conditions)                        |
| `llmserve-cost`       | (cost accounting's fields and conditions)                             |

The apiserver merges the writers: `status.conditions` is a list-map keyed by `type` in the CRD, so each
manager owns its own condition entries, and no writer needs a resourceVersion, a read-modify-write or a
409 retry loop. The rule a writer must keep: **each apply carries every field the manager owns** — a
field it owned before and leaves out is removed (that is how a manager drops a condition it no longer
reports).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from llmserve import kube, slots
from llmserve.api.llmserve import GROUP, KIND, VERSION
from llmserve.controller import metrics

log = logging.getLogger(__name__)

Obj = dict[str, Any]

OPERATOR_MANAGER = "llmserve-operator"
AUTOSCALER_MANAGER = "llmserve-autoscaler"
BURST_MANAGER = "llmserve-burst"
COST_MANAGER = "llmserve-cost"


def status_apply_manifest(name: str, namespace: str, status_fragment: Obj) -> Obj:
    """The apply configuration: identity plus the status fields; None values are left out (not cleared)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "status": _without_nulls(status_fragment),
    }


def already_applied(current_status: Mapping[str, Any] | None, status_fragment: Obj) -> bool:
    """True when every field of the fragment already has that value (conditions matched by type), so the
    write can be skipped. Fields the manager stopped sending are not looked at: a change of the set of
    owned fields must be written."""
    return _contains(dict(current_status or {}), _without_nulls(status_fragment))


async def apply_status(
    name: str,
    namespace: str,
    manager: str,
    status_fragment: Obj,
    current_status: Mapping[str, Any] | None = None,
) -> Obj | None:
    """Server-side applies `status_fragment` (camelCase, as in the CRD) to the LLMServe's /status as
    `manager`, retrying only outages. Pass the status the caller last saw as `current_status` to skip a
    write that would change nothing. Returns the object as stored (None when skipped or when the LLMServe
    no longer exists)."""
    if current_status is not None and already_applied(current_status, status_fragment):
        return None
    manifest = status_apply_manifest(name, namespace, status_fragment)
    metrics.STATUS_WRITES.labels(manager=manager).inc()
    try:
        result: Obj = await kube.retry(lambda: kube.apply(manifest, manager, "status", _priority(manager)))
    except kube.KubeError as err:
        if err.status == 404:
            return None  # deleted meanwhile: nothing left to report on
        raise
    return result


def _priority(manager: str) -> int:
    """What users wait on (Ready, what is rented) goes ahead of the periodic reports (llmserve.slots)."""
    return slots.STATUS if manager in (OPERATOR_MANAGER, BURST_MANAGER) else slots.REPORTS


def conditions_with_transition_times(previous: list[Obj] | None, ours: list[Obj]) -> list[Obj]:
    """Our conditions (wire form) with lastTransitionTime carried over from the stored condition of the
    same type whose status did not change. Conditions of other types are not ours and are left out."""
    stored = {c.get("type"): c for c in previous or []}
    out = []
    for condition in ours:
        before = stored.get(condition["type"])
        if (
            before is not None
            and before.get("status") == condition["status"]
            and before.get("lastTransitionTime")
        ):
            condition = {**condition, "lastTransitionTime": before["lastTransitionTime"]}
        out.append(condition)
    return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _contains(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if not isinstance(current, Mapping):
            return False
        return all(_contains(current.get(key), value) for key, value in wanted.items())
    if isinstance(wanted, list) and wanted and all(isinstance(w, dict) and "type" in w for w in wanted):
        # A list-map keyed by type (conditions): the order and other writers' entries do not matter.
        if not isinstance(current, list):
            return False
        by_type = {c.get("type"): c for c in current if isinstance(c, Mapping)}
        return all(_contains(by_type.get(w["type"]), w) for w in wanted)
    return bool(current == wanted)
