"""The lean watch hook: kopf's watch stream yields objects without managedFields, everything else intact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from kopf._cogs.clients import watching

from llmserve.controller import lean_watch


def _event(kind: str) -> dict[str, Any]:
    return {
        "type": "MODIFIED",
        "object": {
            "kind": kind,
            "metadata": {
                "name": "m", "resourceVersion": "7", "annotations": {"a": "b"},
                "managedFields": [{"manager": "llmserve-cost", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"replicas": 2},
            "status": {"readyReplicas": 1},
        },
    }  # fmt: skip


def test_objects_arrive_without_managed_fields_and_otherwise_unchanged() -> None:
    bookmark = watching.Bookmark.LISTED

    async def stream(**_: Any) -> AsyncIterator[Any]:
        yield _event("LLMServe")
        yield bookmark
        yield {"type": "ERROR", "object": {"code": 410}}

    async def collect() -> list[Any]:
        return [item async for item in lean_watch.lean(stream)(resource="r")]

    first, second, third = asyncio.run(collect())
    expected = _event("LLMServe")
    del expected["object"]["metadata"]["managedFields"]
    assert first == expected
    assert second is bookmark
    assert third == {"type": "ERROR", "object": {"code": 410}}


def test_install_wraps_kopfs_watch_stream_once() -> None:
    original = watching.infinite_watch
    try:
        assert lean_watch.install()  # fails loudly if a kopf release renames the stream
        wrapped = watching.infinite_watch
        assert wrapped is not original or getattr(original, "_llmserve_lean", False)
        assert lean_watch.install()
        assert watching.infinite_watch is wrapped  # not wrapped twice
    finally:
        watching.infinite_watch = original
