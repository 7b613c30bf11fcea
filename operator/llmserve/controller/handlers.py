"""kopf handlers: thin glue from watch events to the Reconciler."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from llmserve import kube, slots
from llmserve.api.llmserve import GROUP, PLURAL, VERSION
from llmserve.controller import metrics, namespaces
from llmserve.controller.reconcile import Reconciler, parse_spec
from llmserve.controller.restore import Restorer
from llmserve.render.labels import LLMSERVE_LABEL

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, PLURAL)
OWNED = {LLMSERVE_LABEL: kopf.PRESENT}
reconciler = Reconciler()
restorer = Restorer(reconciler)

# Debounce: a burst of pod events for one LLMServe ends in one status write.
STATUS_DEBOUNCE_SECONDS = 0.2
_pending_refresh: dict[tuple[str, str], asyncio.Task[None]] = {}


def _slim_pod(body: kopf.Body) -> dict[str, Any]:
    return {
        "metadata": {"name": body.metadata.name, "deletionTimestamp": body.metadata.get("deletionTimestamp")},
        "status": dict(body.get("status", {})),
        "spec": {"nodeName": body.get("spec", {}).get("nodeName")},
    }


def _slim_llmserve(body: kopf.Body) -> dict[str, Any]:
    # Without managedFields and kopf's annotations: at 1,000 objects those were most of the index's memory.
    meta = body.metadata
    return {
        # apiVersion and kind too: Events about the LLMServe are posted with this body as their object.
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        # deletionTimestamp too: the burst controller stops wanting rented replicas for a deleting LLMServe
        # (without it the LLMServe's burst finalizer waits forever for instances nobody retires).
        "metadata": {
            key: meta.get(key)
            for key in ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
        },
        "spec": dict(body.get("spec", {})),
        "status": dict(body.get("status", {})),
    }


def _slim_deployment(body: kopf.Body) -> dict[str, Any]:
    return {
        # deletionTimestamp: a Deployment on its way out keeps no replica (status says so).
        "metadata": {
            "name": body.metadata.name,
            "generation": body.metadata.get("generation"),
            "deletionTimestamp": body.metadata.get("deletionTimestamp"),
        },
        "spec": {"replicas": body.get("spec", {}).get("replicas")},
        "status": dict(body.get("status", {})),
    }


def _slim_service(body: kopf.Body) -> dict[str, Any]:
    return {
        "metadata": {"name": body.metadata.name, "deletionTimestamp": body.metadata.get("deletionTimestamp")}
    }


# Async index functions run on the event loop; sync ones went through a thread pool on every event.
@kopf.index(*RESOURCE)
async def llmserve_index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _slim_llmserve(body)}


@kopf.index("apps", "v1", "deployments", labels=OWNED)
async def deployment_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LLMSERVE_LABEL]): _slim_deployment(body)}


@kopf.index("", "v1", "pods", labels=OWNED)
async def pod_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LLMSERVE_LABEL]): _slim_pod(body)}


@kopf.index("", "v1", "services", labels=OWNED)
async def service_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    # Only the Service named after its LLMServe: the one the renderer makes and readiness depends on.
    if body.metadata.name != labels[LLMSERVE_LABEL]:
        return {}
    return {(namespace, labels[LLMSERVE_LABEL]): _slim_service(body)}


def _one(index: kopf.Index[Any, Any], key: tuple[str, str]) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store else None


async def _refresh_later(key: tuple[str, str], indexes: dict[str, kopf.Index[Any, Any]]) -> None:
    await asyncio.sleep(STATUS_DEBOUNCE_SECONDS)
    try:
        # The state is read once a request slot is ours, not before: while status writes queue (hundreds of
        # LLMServes coming up at once), the events meanwhile find this refresh pending and add none, and
        # the write carries the latest state, not one gone stale in the queue (at 200 new LLMServes each
        # wrote ~4 times and status said Ready ~40 s after the pod was).
        async with kube.holding_slot(slots.STATUS):
            _pending_refresh.pop(key, None)  # events from now on need a refresh of their own
            body = _one(indexes["llmserve_index"], key)
            if body is None:
                metrics.forget(key)
                restorer.forget(key)
                reconciler.forget(key)
                _applied_at_first_sight.pop(key, None)
                return
            pods = list(indexes["pod_index"].get(key, []))
            try:
                await reconciler.refresh_status(
                    body, _one(indexes["deployment_index"], key), pods, _one(indexes["service_index"], key)
                )
            except Exception:  # the next event or the periodic timer retries
                log.exception("event=status_refresh_failed namespace=%s llmserve=%s", *key)
    finally:
        if _pending_refresh.get(key) is asyncio.current_task():  # cancelled while waiting for a slot
            _pending_refresh.pop(key, None)


INDEX_NAMES = ("llmserve_index", "deployment_index", "pod_index", "service_index")


def schedule_refresh(key: tuple[str, str], kwargs: dict[str, Any]) -> None:
    """Refreshes the LLMServe's status soon; `kwargs` are a handler's kwargs, where kopf passes the indexes."""
    if key not in _pending_refresh:
        indexes = {name: kwargs[name] for name in INDEX_NAMES}
        _pending_refresh[key] = asyncio.create_task(_refresh_later(key, indexes))


# kopf runs a new object's create handlers only on the event after its finalizer PATCH (a round trip to
# the apiserver and back through the watch, queued behind every other new object's at scale), so a new
# LLMServe's children are applied on its first watch event instead, and the create handler then skips
# what was done: (uid, generation) applied at first sight, by LLMServe.
_applied_at_first_sight: dict[tuple[str, str], tuple[str, int]] = {}
DIFFBASE_ANNOTATION = f"{GROUP}/last-handled-configuration"


@kopf.on.event(*RESOURCE)
async def first_sight(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    meta = body.metadata
    # ADDED: created while we watch (objects listed at start-up come as type None and go through resume).
    if type != "ADDED" or meta.get("deletionTimestamp") or DIFFBASE_ANNOTATION in meta.annotations:
        return
    if parse_spec(dict(body.get("spec", {})))[0] is None:
        return  # the create handler reports the invalid spec
    try:
        await reconciler.ensure(dict(body), None, first_time=True, report=False)
    except Exception as err:  # the create handler applies again, and reports what fails
        log.info(
            "event=first_sight_apply_failed namespace=%s llmserve=%s error=%r", namespace, name, str(err)
        )
        return
    _applied_at_first_sight[(namespace, name)] = (str(meta.uid), int(meta.get("generation") or 0))


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def ensure(
    body: kopf.Body,
    namespace: str,
    name: str,
    reason: kopf.Reason,
    deployment_index: kopf.Index[Any, Any],
    **kwargs: Any,
) -> None:
    key = (namespace, name)
    try:
        first_time = reason == kopf.Reason.CREATE
        done = _applied_at_first_sight.pop(key, None)
        if first_time and done == (str(body.metadata.uid), int(body.metadata.get("generation") or 0)):
            return  # this very spec was applied at first sight
        await reconciler.ensure(dict(body), _one(deployment_index, key), first_time)
    finally:
        schedule_refresh(key, {"deployment_index": deployment_index, **kwargs})


@kopf.on.event("", "v1", "pods", labels=OWNED)
async def child_changed(namespace: str, labels: kopf.Labels, **kwargs: Any) -> None:
    schedule_refresh((namespace, labels[LLMSERVE_LABEL]), kwargs)


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("", "v1", "services", labels=OWNED)
async def applied_child_changed(
    type: str | None, body: kopf.Body, namespace: str, name: str, labels: kopf.Labels, **kwargs: Any
) -> None:
    """Status follows the Deployment and the Service; one deleted while its LLMServe lives (by hand, say)
    is applied again: `ensure` runs only on spec changes and resume, so nothing else would bring it back."""
    owner = labels[LLMSERVE_LABEL]
    schedule_refresh((namespace, owner), kwargs)
    if type != "DELETED" or name != owner:  # only the child named after its LLMServe is the renderer's
        return
    kind = str(body.get("kind") or "")
    key = (namespace, owner)
    outcome = await restorer.child_deleted(namespace, owner, kind, lambda: schedule_refresh(key, kwargs))
    # One line per deletion: what the operator made of it (the GC's are `llmserve_gone`; a namespace's
    # teardown's `namespace_terminating`, expected and skipped); a refusal being retried is a warning.
    level = logging.WARNING if outcome.startswith("retrying") else logging.INFO
    log.log(
        level,
        "event=child_deleted namespace=%s llmserve=%s kind=%s outcome=%s",
        namespace,
        owner,
        kind,
        outcome,
    )


@kopf.on.event("", "v1", "namespaces")
async def namespace_changed(type: str | None, body: kopf.Body, name: str, **_: Any) -> None:
    """Keeps controller.namespaces' view of which namespaces are being deleted."""
    deleting = (
        bool(body.metadata.get("deletionTimestamp")) or body.get("status", {}).get("phase") == "Terminating"
    )
    namespaces.observe(name, deleting, gone=type == "DELETED")


@kopf.on.cleanup()
async def stop_restores(**_: Any) -> None:
    """Shutdown ends the restore retries it started (the next leader's resume applies every child)."""
    await restorer.close()


@kopf.timer(*RESOURCE, interval=30, idle=10)
async def resync_status(namespace: str, name: str, **kwargs: Any) -> None:
    """A safety net: status is event-driven, but a missed event must not leave it stale for long."""
    schedule_refresh((namespace, name), kwargs)
