"""Hold at zero: scale-up requested once, bounded queue, 503 with Retry-After on timeout or overflow."""

from __future__ import annotations

import asyncio

import pytest

from llmserve.gateway.errors import GatewayError
from llmserve.gateway.hold import Holder, HoldSettings
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.registry import Backend, ModelRoute, Registry

ZERO = ModelRoute("llama", (), "ai", "llama")
READY = ModelRoute("llama", (Backend("http://10.0.0.1:8000"),), "ai", "llama")


class RecordingScaler:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.fail = fail

    async def scale_from_zero(self, namespace: str, llmserve: str, model: str) -> None:
        self.calls.append((namespace, llmserve, model))
        if self.fail:
            raise RuntimeError("apiserver down")


def holder(scaler: RecordingScaler, **settings: float) -> tuple[Holder, Registry]:
    registry = Registry()
    registry.replace("kubernetes", [ZERO])
    return Holder(registry, scaler, HoldSettings(**settings), GatewayMetrics()), registry  # type: ignore[arg-type]


async def test_held_requests_scale_the_model_once_and_complete_when_a_replica_is_ready() -> None:
    scaler = RecordingScaler()
    hold, registry = holder(scaler, timeout_seconds=5)
    waiting = [asyncio.create_task(hold.wait_for_replica(ZERO)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert scaler.calls == [("ai", "llama", "llama")]
    assert hold.held("llama") == 3
    registry.replace("kubernetes", [READY])
    routes = await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert all(route.backends for route in routes)
    assert hold.held("llama") == 0


async def test_a_request_for_a_ready_model_is_not_held() -> None:
    scaler = RecordingScaler()
    hold, _ = holder(scaler)
    assert await hold.wait_for_replica(READY) is READY
    assert scaler.calls == []


async def test_a_hold_that_times_out_answers_503_with_retry_after() -> None:
    hold, _ = holder(RecordingScaler(), timeout_seconds=0.05, retry_after_seconds=7)
    with pytest.raises(GatewayError) as err:
        await hold.wait_for_replica(ZERO)
    assert err.value.status == 503 and err.value.retry_after_seconds == 7
    assert err.value.response().headers["Retry-After"] == "7"
    assert hold.held("llama") == 0


async def test_a_full_hold_queue_refuses_at_once() -> None:
    hold, _ = holder(RecordingScaler(), timeout_seconds=5, max_held_per_model=2)
    waiting = [asyncio.create_task(hold.wait_for_replica(ZERO)) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(GatewayError, match="already waiting") as err:
        await hold.wait_for_replica(ZERO)
    assert err.value.status == 503
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert hold.held("llama") == 0


async def test_a_failed_scale_up_is_retried_while_requests_keep_waiting() -> None:
    scaler = RecordingScaler(fail=True)
    hold, _ = holder(scaler, timeout_seconds=0.35, rescale_interval_seconds=0.1)
    with pytest.raises(GatewayError):
        await hold.wait_for_replica(ZERO)
    assert len(scaler.calls) >= 3
