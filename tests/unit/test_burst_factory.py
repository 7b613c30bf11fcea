"""One factory: a pool's provider, base URL overrides from the environment, static endpoints, bad kinds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmserve.api.burstpool import BurstPoolSpec
from llmserve.burst.factory import make_provider
from llmserve.burst.runpod import RunPodProvider
from llmserve.burst.static import StaticProvider
from llmserve.burst.types import ErrorKind, ProviderError
from llmserve.burst.vastai import VastProvider
from llmserve.settings import burst_overrides

KEY = "acct-key-0123456789abcdef"


def spec(provider: str, **extra: object) -> BurstPoolSpec:
    body: dict[str, object] = {
        "provider": provider,
        "gpuPreferences": [{"gpuType": "H100", "maxUsdPerHour": 3}],
        "maxHourlySpend": 10,
        "monthlyBudget": 100,
        "allowedNamespaces": {},
    }
    if provider != "static":
        body["credentialsSecret"] = {"name": "k"}
    else:
        body["staticEndpoints"] = [{"url": "https://llm.example.internal/", "usdPerHour": 2.5}]
    return BurstPoolSpec.model_validate(body | extra)


async def test_runpod_and_vast_clients_point_at_the_urls_the_environment_names() -> None:
    overrides = burst_overrides({
        "LLMSERVE_BURST_RUNPOD_URL": "http://127.0.0.1:9/v1",
        "LLMSERVE_BURST_RUNPOD_PROXY_URL_TEMPLATE": "https://127.0.0.1:10/{pod_id}-{port}",
        "LLMSERVE_BURST_VASTAI_URL": "http://127.0.0.1:11",
    })  # fmt: skip
    runpod = make_provider(spec("runpod"), KEY, overrides)
    vast = make_provider(spec("vastai"), KEY, overrides)
    try:
        assert isinstance(runpod, RunPodProvider) and isinstance(vast, VastProvider)
        assert str(runpod._http._client.base_url).startswith("http://127.0.0.1:9/v1")
        assert runpod._proxy_url_template == "https://127.0.0.1:10/{pod_id}-{port}"
        assert str(vast._http._client.base_url).startswith("http://127.0.0.1:11")
    finally:
        await runpod.aclose()
        await vast.aclose()


async def test_without_overrides_the_real_apis_are_used() -> None:
    runpod = make_provider(spec("runpod"), KEY, burst_overrides({"LLMSERVE_BURST_VASTAI_URL": "http://x"}))
    try:
        assert str(runpod._http._client.base_url).startswith("https://api.runpod.io")  # type: ignore[attr-defined]
    finally:
        await runpod.aclose()


async def test_a_static_pool_claims_its_endpoints_with_the_pools_key() -> None:
    static = make_provider(spec("static", gpuPreferences=[]), KEY)
    assert isinstance(static, StaticProvider)
    assert static.api_key("static-0-0") == KEY


def test_a_missing_key_is_an_invalid_provider_error_that_never_shows_a_key() -> None:
    with pytest.raises(ProviderError) as err:
        make_provider(spec("runpod"), "")
    assert err.value.kind is ErrorKind.INVALID
    assert "API key" in str(err.value)


async def test_a_static_pool_without_gpu_preferences_claims_an_endpoint_within_the_hourly_cap() -> None:
    from llmserve.burst.engine import PoolController
    from llmserve.burst.planner import Demand
    from tests.support.burst_chaos import InMemoryStore
    from tests.support.inmemory_provider import FakeClock

    pool = spec("static", gpuPreferences=[])
    store = InMemoryStore()
    controller = PoolController(pool="s", spec=pool, cluster_id="c1", provider=make_provider(pool, KEY),
                                store=store, clock=FakeClock(datetime(2026, 11, 1, tzinfo=UTC)))  # fmt: skip
    demand = Demand(owner="ai/llama", max_replicas=1, unschedulable_replicas=1, local_ready_replicas=0)
    await controller.step({demand.owner: demand}, demands_synced=True)
    [record] = store.saved.instances
    assert record.id == "static-0-0" and record.endpoint == "https://llm.example.internal"
    assert record.usd_per_hour == 2.5
    await controller.step({demand.owner: demand}, demands_synced=True)  # the next step sees it serve
    assert store.saved.instances[0].ready_since is not None
