"""The one module that talks to the Kubernetes API (through kr8s's async client)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import warnings
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kr8s
import kr8s.asyncio

from llmserve import slots
from llmserve.api.llmserve import GROUP, PLURAL, VERSION
from llmserve.slots import PrioritySlots

log = logging.getLogger(__name__)

# kr8s warns for every Kubernetes minor it has not been released against; the calls used here
# (REST paths, server-side apply, watch) are stable across versions.
warnings.filterwarnings("ignore", message="Kubernetes version .* is not supported", module="kr8s")

Obj = dict[str, Any]

LLMSERVE_API = f"{GROUP}/{VERSION}"

# apiVersion/kind -> REST path pieces. Only what the operator and the gateway touch (the dev cluster's
# own helpers, e.g. a plain watch, live in hack/devcluster).
_RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "Pod": ("v1", "pods"),
    "Secret": ("v1", "secrets"),
    "Event": ("v1", "events"),
    "Node": ("v1", "nodes"),
    "Namespace": ("v1", "namespaces"),
    "Lease": ("coordination.k8s.io/v1", "leases"),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "LLMServe": (LLMSERVE_API, PLURAL),
    "BurstPool": (LLMSERVE_API, "burstpools"),
    "ServiceAccount": ("v1", "serviceaccounts"),
}


# A 500 that no retry can cure: server-side apply could not build the object (e.g. two volume mounts at
# one path, a duplicate key in an associative list). Retrying it forever only hides the cause.
_PERMANENT_SERVER_ERRORS = ("failed to create typed patch object", "duplicate entries for key")


class KubeError(Exception):
    """The API server refused or failed a request; `status` is the HTTP code (0 for no answer), `fields`
    the fields the server named as the cause (from the Status' details.causes)."""

    def __init__(self, message: str, status: int, reason: str = "", fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status, self.reason, self.fields = status, reason, fields

    @property
    def retryable(self) -> bool:
        if any(text in str(self) for text in _PERMANENT_SERVER_ERRORS):
            return False
        return self.status == 0 or self.status == 429 or self.status >= 500


def error_from_response(response: httpx.Response | None, fallback: str) -> KubeError:
    """A KubeError carrying the apiserver's own message and the fields it names, for any status code."""
    if response is None:
        return KubeError(fallback, 0)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return KubeError(fallback, response.status_code)
    details = body.get("details") or {}
    fields = tuple(
        str(c["field"]) for c in details.get("causes") or [] if isinstance(c, dict) and c.get("field")
    )
    message = str(body.get("message") or fallback)
    return KubeError(message, response.status_code, str(body.get("reason", "")), fields)


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, kr8s.asyncio.Api] = weakref.WeakKeyDictionary()
_client_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
# Requests in flight at once (per event loop). httpx keeps 20 idle connections: past that, every request
# beyond opened a new TLS connection and closed it after one use, and the pool scanned its queue on each
# request (quadratic). With hundreds of LLMServes writing at once that was most of the operator's CPU;
# a bounded number in flight reuses warm connections and queues the rest cheaply.
# Set at start-up from the process's settings (LLMSERVE_KUBE_MAX_IN_FLIGHT).
MAX_IN_FLIGHT = 16
# Status writes hold at most this many of those slots (and the periodic reports among them at most
# MAX_REPORTS_IN_FLIGHT), and only the slots nothing more urgent waits for: hundreds of them must not take
# the apiserver's time from creating children (see llmserve.slots). With 4 for all status, at 200 new
# LLMServes the reconciler's Ready writes queued behind ~1,400 others: status said Ready 44 s (p50)
# after the first pod was.
MAX_STATUS_IN_FLIGHT = 8
MAX_REPORTS_IN_FLIGHT = 4
# Service applies hold at most this many: the apiserver allocates cluster IPs one at a time, so more in
# flight only wait there, holding slots a Deployment could use (measured: 2 s p50, 4 s p99 per Service
# apply at 200 new LLMServes with 16 in flight, against 0.4 s for a Deployment).
MAX_SERVICES_IN_FLIGHT = 4
_lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PrioritySlots] = weakref.WeakKeyDictionary()


# True inside `holding_slot`: the block's requests use the slot it holds.
_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("llmserve_kube_holding_slot", default=False)


@contextlib.asynccontextmanager
async def holding_slot(priority: int) -> AsyncIterator[None]:
    """Holds one request slot for the block; the block's own requests (one at a time) use it instead of
    queueing again. For a write worth computing only once it can go out: a status computed from the
    latest state, not from the state when it was queued."""
    if _holding.get():
        yield
        return
    async with _slots().slot(priority):
        token = _holding.set(True)
        try:
            yield
        finally:
            _holding.reset(token)


def _slots() -> PrioritySlots:
    loop = asyncio.get_running_loop()
    lanes = _lanes.get(loop)
    if lanes is None:
        lanes = _lanes[loop] = PrioritySlots(
            MAX_IN_FLIGHT,
            {
                slots.SERVICE: MAX_SERVICES_IN_FLIGHT,
                slots.STATUS: MAX_STATUS_IN_FLIGHT,
                slots.REPORTS: MAX_REPORTS_IN_FLIGHT,
            },
        )
    return lanes


async def api() -> kr8s.asyncio.Api:
    """The client of this event loop, made once: awaiting kr8s's factory again re-reads the credentials
    and calls /version each time, which doubled every request's cost. kr8s re-authenticates on 401."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # One maker at a time: tasks starting together (the gateway's watches) would each make a
        # client, and all but the last would never be closed (their connections leak at shutdown).
        async with _client_locks.setdefault(loop, asyncio.Lock()):
            client = _clients.get(loop)
            if client is None:
                client = _clients[loop] = await kr8s.asyncio.api()
    return client


async def close() -> None:
    """Closes this event loop's client (its pooled connections) at shutdown; the next call makes a new one."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    session = getattr(client, "_session", None)  # kr8s has no public close; its session is an httpx client
    if isinstance(session, httpx.AsyncClient):
        await session.aclose()


def has_client() -> bool:
    """Whether this event loop still has an open client (a shutdown check: False after close())."""
    return asyncio.get_running_loop() in _clients


def resource_path(kind: str, name: str | None = None, subresource: str | None = None) -> tuple[str, str]:
    """(apiVersion, the REST path below the namespace) of one kind, object or subresource."""
    version, plural = _RESOURCES[kind]
    url = plural + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")
    return version, url


async def request(
    method: str,
    kind: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
    priority: int | None = None,
    **kwargs: Any,
) -> Obj:
    """One API call, with the server's own error message preserved in a KubeError. `priority` (llmserve.slots)
    orders it among the requests waiting for a slot; by default status writes go last."""
    version, url = resource_path(kind, name, subresource)
    if priority is None:
        priority = slots.STATUS if subresource == "status" else slots.DEFAULT
    client = await api()
    try:
        async with (
            contextlib.nullcontext() if _holding.get() else _slots().slot(priority),
            client.call_api(method, version=version, namespace=namespace, url=url, **kwargs) as resp,
        ):
            return resp.json() if resp.content else {}
    except kr8s.ServerError as err:
        raise error_from_response(err.response, str(err)) from err
    except (httpx.TransportError, kr8s.APITimeoutError) as err:
        raise KubeError(f"API server unreachable: {err}", 0) from err


async def get(kind: str, namespace: str | None, name: str) -> Obj | None:
    try:
        return await request("GET", kind, namespace, name)
    except KubeError as err:
        if err.status == 404:
            return None
        raise


async def list_objects(kind: str, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
    params = {"labelSelector": label_selector} if label_selector else {}
    return list((await request("GET", kind, namespace, params=params)).get("items", []))


async def apply(
    manifest: Obj, field_manager: str, subresource: str | None = None, priority: int | None = None
) -> Obj:
    """Server-side apply: the operator owns exactly the fields it renders, and nothing else."""
    meta = manifest["metadata"]
    return await request(
        "PATCH",
        manifest["kind"],
        meta.get("namespace"),
        meta["name"],
        subresource,
        priority,
        params={"fieldManager": field_manager, "force": "true"},
        headers={"Content-Type": "application/apply-patch+yaml"},
        content=json.dumps(manifest),
    )


async def merge_patch(
    kind: str, namespace: str | None, name: str, patch: Obj, subresource: str | None = None
) -> Obj:
    return await request(
        "PATCH",
        kind,
        namespace,
        name,
        subresource,
        headers={"Content-Type": "application/merge-patch+json"},
        content=json.dumps(patch),
    )


async def replace(manifest: Obj) -> Obj:
    """PUT: conditional on metadata.resourceVersion (409 when someone wrote the object meanwhile)."""
    meta = manifest["metadata"]
    return await request("PUT", manifest["kind"], meta.get("namespace"), meta["name"], json=manifest)


async def create(manifest: Obj) -> Obj:
    return await request("POST", manifest["kind"], manifest["metadata"].get("namespace"), json=manifest)


async def delete(kind: str, namespace: str | None, name: str) -> None:
    try:
        await request("DELETE", kind, namespace, name)
    except KubeError as err:
        if err.status != 404:
            raise


async def scale(kind: str, namespace: str, name: str, replicas: int) -> Obj:
    """Writes the desired count through the scale subresource, as `kubectl scale` does."""
    return await merge_patch(kind, namespace, name, {"spec": {"replicas": replicas}}, "scale")


async def retry(operation: Any, attempts: int = 5, base_delay_seconds: float = 0.5) -> Any:
    """Runs `await operation()` again on retryable API errors, with exponential backoff."""
    for attempt in range(attempts):
        try:
            return await operation()
        except KubeError as err:
            if not err.retryable or attempt == attempts - 1:
                raise
            delay = base_delay_seconds * 2**attempt
            log.warning(
                "event=api_retry status=%s attempt=%d delay_seconds=%.1f", err.status, attempt + 1, delay
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def list_then_watch(
    kind: str,
    namespace: str | None = None,
    label_selector: str = "",
    timeout_seconds: int = 300,
    field_selector: str = "",
) -> AsyncIterator[tuple[str, Obj]]:
    """Yields ("SYNC", {"items": [...]}) with every current object, then the watch events that follow
    that list. The stream ends on timeout or when the server drops the version (410); the caller
    loops and gets a fresh SYNC, so deletions missed in between are never kept."""
    params: dict[str, Any] = {"labelSelector": label_selector} if label_selector else {}
    if field_selector:  # e.g. metadata.name=X, which RBAC rules limited by resourceNames require
        params["fieldSelector"] = field_selector
    listed = await request("GET", kind, namespace, params=params)
    yield "SYNC", {"items": list(listed.get("items", []))}
    params |= {
        "watch": "true",
        "timeoutSeconds": timeout_seconds,
        "resourceVersion": listed.get("metadata", {}).get("resourceVersion", ""),
        "allowWatchBookmarks": "true",
    }
    async for event in watch_events(kind, namespace, params):
        if event["type"] == "ERROR":
            return
        if event["type"] != "BOOKMARK":
            yield event["type"], event["object"]


async def watch_events(kind: str, namespace: str | None, params: dict[str, Any]) -> AsyncIterator[Obj]:
    """The raw events of one watch request (`params` carries watch=true and the selectors)."""
    version, url = resource_path(kind)
    client = await api()
    try:
        async with client.call_api(
            "GET", version=version, namespace=namespace, url=url, params=params, stream=True,
            timeout=httpx.Timeout(None, connect=10),
        ) as resp:  # fmt: skip
            async for line in resp.aiter_lines():
                if line:
                    yield json.loads(line)
    except (httpx.TransportError, kr8s.APITimeoutError) as err:
        raise KubeError(f"watch of {kind} failed: {err}", 0) from err
