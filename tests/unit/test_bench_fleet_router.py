"""The fleet benchmark routes with the product's router: llmserve.gateway.routing.route, slot-aware least load."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from bench import autoscaling  # noqa: F401  (puts bench/ on sys.path for the sibling modules)

from autoscaling_fleet import Fleet, GatewayRouter, Replica, least_loaded
from autoscaling_policies import Static
from autoscaling_traces import Request
from llmserve.gateway import routing
from llmserve.sim.batching import Engine


def fleet_args(**overrides: Any) -> argparse.Namespace:
    values = dict(
        gpu="NVIDIA-H100-80GB-HBM3",
        model="meta-llama/Llama-3.1-70B-Instruct",
        gpus_per_replica=4,
        gpus=16,
        max_num_seqs=32,
        max_model_len=8192,
        cold_start_seconds=60.0,
        seed=7,
    )
    return argparse.Namespace(**{**values, **overrides})


def steady(rps: float, seconds: float) -> list[Request]:
    return [Request(i / rps, 500, 40) for i in range(int(rps * seconds))]


def test_the_fleets_default_router_is_the_gateways_least_load_route(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[routing.Policy] = []
    real_route = routing.route

    def recording_route(policy: routing.Policy, *rest: Any, **kw: Any) -> routing.Choice | None:
        calls.append(policy)
        return real_route(policy, *rest, **kw)

    monkeypatch.setattr(routing, "route", recording_route)
    trace = steady(4, 20)
    fleet = Fleet(fleet_args(), Static(2))
    result = fleet.run(trace, 2)

    assert isinstance(fleet.router, GatewayRouter)
    assert len(result.finished) == len(trace)
    assert len(calls) == len(trace)  # every request was placed by the gateway's route()
    assert set(calls) == {routing.Policy.LEAST_LOAD}


def test_the_ideal_router_stays_selectable_and_bypasses_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "route", lambda *a, **kw: pytest.fail("the gateway router was used"))
    trace = steady(4, 10)
    fleet = Fleet(fleet_args(router="ideal"), Static(2))
    assert fleet.router is least_loaded
    assert len(fleet.run(trace, 2).finished) == len(trace)


def test_an_unknown_router_name_is_refused_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--router must be one of gateway, ideal"):
        Fleet(fleet_args(router="random"), Static(1))


def replica_holding(prompt_tokens: int) -> Replica:
    """A ready replica with one request in its batch, prefilled (its KV cache holds the prompt)."""
    fleet = Fleet(fleet_args(), Static(1))
    engine = Engine(fleet.profile, fleet.engine_config)
    engine.submit("held", prompt_tokens, 100, 0.0)
    engine.step(0.0)
    return Replica(engine, 0.0, 0.0)


def test_the_gateway_breaks_equal_load_by_kv_cache_use_where_the_ideal_router_takes_the_first() -> None:
    full_cache, light_cache = replica_holding(6000), replica_holding(200)
    assert full_cache.load == light_cache.load == 1
    assert full_cache.engine.kv_usage_fraction > light_cache.engine.kv_usage_fraction
    request = Request(0.0, 500, 40)

    assert GatewayRouter(32)([full_cache, light_cache], request) is light_cache
    assert least_loaded([full_cache, light_cache], request) is full_cache
