"""A plain watch stream for the dev cluster's fake kubelet and the reconcile benchmark (the operator and
the gateway use llmserve.kube.list_then_watch, which never misses a deletion between two streams)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kr8s

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
    version, url = kube.resource_path(kind)
    params: dict[str, Any] = {"watch": "true", "timeoutSeconds": timeout_seconds}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    client = await kube.api()
    try:
        async with client.call_api(
            "GET", version=version, namespace=namespace, url=url, params=params, stream=True,
            timeout=httpx.Timeout(None, connect=10),
        ) as resp:  # fmt: skip
            async for line in resp.aiter_lines():
                if line:
                    event = json.loads(line)
                    yield event["type"], event["object"]
    except (httpx.TransportError, kr8s.APITimeoutError) as err:
        raise kube.KubeError(f"watch of {kind} failed: {err}", 0) from err
