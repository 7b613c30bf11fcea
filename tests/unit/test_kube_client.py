"""One Kubernetes client per event loop, even when many tasks ask for it at once (the gateway's watches
start together): a second client would never be closed, and its connections leak at shutdown."""

from __future__ import annotations

import asyncio

import pytest

from llmserve import kube


async def test_tasks_starting_together_share_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    async def slow_factory() -> object:  # kr8s reads the kubeconfig and calls /version: it awaits
        await asyncio.sleep(0.01)
        made.append(object())
        return made[-1]

    monkeypatch.setattr(kube.kr8s.asyncio, "api", slow_factory)
    clients = await asyncio.gather(*(kube.api() for _ in range(5)))
    assert len(made) == 1
    assert all(client is made[0] for client in clients)
    assert kube.has_client()
    await kube.close()
    assert not kube.has_client()
