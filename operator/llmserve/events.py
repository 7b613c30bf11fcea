"""Posts Kubernetes Events from processes that run without kopf's poster (the gateway), in the shape
kopf gives the operator's, so `kubectl describe` answers "why?" the same way for both."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from llmserve import kube

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MAX_MESSAGE_CHARS = 1000  # the apiserver refuses longer Event messages


async def post_event(obj: Obj, kind: str, event_type: str, reason: str, message: str, component: str) -> None:
    """An Event on `obj`; a failure is only logged (an Event is an explanation, never a reason to fail)."""
    meta = obj["metadata"]
    api_version = (obj.get("apiVersion") or kube.LLMSERVE_API) if kind == "LLMServe" else "v1"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace", "default")},
        "involvedObject": {
            "apiVersion": api_version, "kind": kind, "name": meta["name"],
            "namespace": meta.get("namespace"), "uid": meta.get("uid"),
        },
        "type": event_type, "reason": reason, "message": message[:MAX_MESSAGE_CHARS],
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "source": {"component": component}, "reportingComponent": component,
    }  # fmt: skip
    try:
        await kube.create(event)
    except kube.KubeError as err:
        log.warning("event=post_event_failed reason=%s status=%s", reason, err.status)
