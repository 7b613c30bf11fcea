"""Drops metadata.managedFields from every object kopf's watch streams deliver, before kopf keeps or queues it.

Nothing in the operator reads managedFields (kopf does not either: it patches with merge patches and
keeps its own state in annotations), yet they are the largest part of an LLMServe's body once five field
managers write its status, and kopf holds every object's latest body (a daemon's live body, queued
events) in memory. Kubernetes cannot leave them out of a watch, so they are dropped on arrival.

kopf has no setting for this; the hook wraps its watch-stream generator (`infinite_watch`, which both the
initial listing and the watch go through). If a kopf release renames it, `install` logs that and does
nothing: the operator then works as before, with more memory.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_llmserve_lean"


def drop_managed_fields(item: Any) -> Any:
    """Removes metadata.managedFields from a raw watch event's object, in place; anything else (kopf's
    bookmarks, errors) passes unchanged."""
    if isinstance(item, dict):
        obj = item.get("object")
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
    return item


def lean(stream: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """`stream` (a kopf watch-stream generator function) with managedFields dropped from what it yields."""

    async def lean_stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in stream(*args, **kwargs):
            yield drop_managed_fields(item)

    setattr(lean_stream, _MARK, True)
    lean_stream.__wrapped__ = stream  # type: ignore[attr-defined]
    return lean_stream


def install() -> bool:
    """Wraps kopf's watch stream (once); False, with a warning, if this kopf has no such function."""
    try:
        from kopf._cogs.clients import watching
    except ImportError:
        log.warning(
            "event=lean_watch_unavailable note=%r", "kopf has no watching module; bodies keep managedFields"
        )
        return False
    original = getattr(watching, "infinite_watch", None)
    if original is None:
        log.warning(
            "event=lean_watch_unavailable note=%r", "kopf has no infinite_watch; bodies keep managedFields"
        )
        return False
    if not getattr(original, _MARK, False):
        watching.infinite_watch = lean(original)
    return True
