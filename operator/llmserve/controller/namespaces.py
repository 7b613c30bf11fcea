"""Which namespaces are being deleted: there nothing is restored and no Event is posted (both are creates the
API server refuses in a terminating namespace, and kopf would retry each refused Event for half a minute)."""

from __future__ import annotations

from typing import Any, cast

import kopf

from llmserve import kube

_terminating: set[str] = set()

# What the API server answers a create in a terminating namespace (403, cause NamespaceTerminating).
_TERMINATING_REFUSAL = "because it is being terminated"


def observe(name: str, deleting: bool, gone: bool = False) -> None:
    """Records a namespace's latest watch event: `deleting` once it has a deletionTimestamp (or phase
    Terminating); `gone` when it was deleted (forgotten: a namespace of the same name may come again)."""
    if deleting and not gone:
        _terminating.add(name)
    else:
        _terminating.discard(name)


def terminating(namespace: str) -> bool:
    """True while `namespace` is being deleted (as far as the watch has told so far)."""
    return namespace in _terminating


def refused_as_terminating(namespace: str, err: BaseException) -> bool:
    """True if `err` is the API server refusing a create because `namespace` is being deleted; the
    namespace then counts as terminating, whether or not its watch event has arrived yet."""
    if isinstance(err, kube.KubeError) and err.status == 403 and _TERMINATING_REFUSAL in str(err):
        _terminating.add(namespace)
        return True
    return False


def post_event(body: Any, type: str, reason: str, message: str) -> None:
    """kopf.event, unless the object's namespace is being deleted: the API server refuses the Event there,
    and kopf retries it for half a minute logging each refusal as an error. A cluster-scoped object's
    Events (namespace "") are always posted."""
    if terminating(str((body.get("metadata") or {}).get("namespace") or "")):
        return
    kopf.event(cast(kopf.Body, body), type=type, reason=reason, message=message)
