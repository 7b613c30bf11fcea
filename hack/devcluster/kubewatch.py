"""A plain watch stream for the dev cluster's fake kubelet and the reconcile benchmark (the operator and
the gateway use llmserve.kube.list_then_watch, which never misses a deletion between two streams)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from llmserve import kube

Obj = dict[str, Any]


async def watch(
    kind: str,
    namespace: str | None = None,
    label_selector: str = "",
    field_selector: str = "",
    timeout_seconds: int = 300,
) -> AsyncIterator[tuple[str, Obj]]:
    """Yields (event type, object) from one watch stream, starting with ADDED for every existing object;
    the caller loops to re-watch when the stream ends."""
    params: dict[str, Any] = {"watch": "true", "timeoutSeconds": timeout_seconds}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    async for event in kube.watch_events(kind, namespace, params):
        yield event["type"], event["object"]
