"""The registry merges sources and wakes requests waiting for a model's first backend."""

from __future__ import annotations

import asyncio

from llmserve.gateway.registry import Backend, ModelRoute, Registry


def test_sources_merge_backends_and_keep_the_scalable_target() -> None:
    registry = Registry()
    registry.replace("kubernetes", [ModelRoute("llama", (Backend("http://10.0.0.1:8000"),), "ai", "llama")])
    registry.replace("burst", [ModelRoute("llama", (Backend("https://rented:8000", source="burst"),))])
    route = registry.route("llama")
    assert route is not None
    assert [b.url for b in route.backends] == ["http://10.0.0.1:8000", "https://rented:8000"]
    assert (route.namespace, route.llmserve) == ("ai", "llama")
    registry.replace("burst", [])
    route = registry.route("llama")
    assert route is not None and len(route.backends) == 1


async def test_a_waiting_request_wakes_when_the_model_gets_a_backend() -> None:
    registry = Registry()
    registry.replace("kubernetes", [ModelRoute("llama", (), "ai", "llama")])
    waiter = asyncio.create_task(registry.wait_for_backends("llama"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    registry.replace("kubernetes", [ModelRoute("llama", (Backend("http://10.0.0.1:8000"),), "ai", "llama")])
    await asyncio.wait_for(waiter, 1)


def test_load_of_a_removed_idle_backend_is_forgotten() -> None:
    registry = Registry()
    backend = Backend("http://10.0.0.1:8000")
    registry.replace("static", [ModelRoute("llama", (backend,))])
    registry.load(backend).scraped_waiting = 3
    registry.replace("static", [ModelRoute("llama", ())])
    assert backend.url not in registry.loads


def test_two_llmserves_never_share_a_served_name_across_sources() -> None:
    registry = Registry()
    registry.replace("kubernetes", [ModelRoute("llama", (Backend("http://10.0.0.1:8000"),), "a", "llama")])
    registry.replace("burst", [ModelRoute("llama", (Backend("http://6.6.6.6:8000"),), "b", "thief")])
    route = registry.route("llama")
    assert route is not None
    assert [b.url for b in route.backends] == ["http://10.0.0.1:8000"]
    # the same LLMServe's burst instances do join its route
    registry.replace("burst", [ModelRoute("llama", (Backend("http://7.7.7.7:8000"),), "a", "llama")])
    route = registry.route("llama")
    assert route is not None and len(route.backends) == 2
