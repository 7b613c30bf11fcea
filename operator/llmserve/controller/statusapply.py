"""Server-side apply of one writer's part of an LLMServe's status, under that writer's own field manager."""

from __future__ import annotations

import functools
from typing import Any

from llmserve import kube, slots
from llmserve.api.base import Condition
from llmserve.api.llmserve import KIND
from llmserve.controller import metrics

Obj = dict[str, Any]


async def apply_status(namespace: str, name: str, status: Obj, field_manager: str) -> bool:
    """Applies `status` (only the fields this writer owns); False when the LLMServe is gone.

    With server-side apply every writer keeps exactly the fields it applied last, so the fit check, the
    cost meter and the reconciler never overwrite each other, and no resourceVersion retry loop is needed.
    """
    manifest = {"apiVersion": kube.LLMSERVE_API, "kind": KIND,
                "metadata": {"name": name, "namespace": namespace}, "status": status}  # fmt: skip
    metrics.STATUS_WRITES.labels(manager=field_manager).inc()
    try:
        # The cost meter's and the fit check's reports: after the status users wait on (llmserve.slots).
        await kube.retry(functools.partial(kube.apply, manifest, field_manager, "status", slots.REPORTS))
    except kube.KubeError as err:
        if err.status == 404:
            return False
        raise
    return True


def carry_transition_time(previous_conditions: list[Obj], condition: Condition) -> Condition:
    """Keeps lastTransitionTime when the condition's status did not change."""
    for raw in previous_conditions:
        if raw.get("type") == condition.type and raw.get("status") == condition.status:
            try:
                before = Condition.model_validate(raw)
            except ValueError:
                return condition
            return condition.model_copy(update={"last_transition_time": before.last_transition_time})
    return condition
