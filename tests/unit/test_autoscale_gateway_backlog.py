"""The gateway's held and queued requests as the autoscaler reads them: the page, the sum over gateway
replicas, the pods it reads (real loopback HTTP), and what the policy does with the count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from hack.devcluster.processes import free_port
from llmserve.autoscale.gateway_backlog import (
    GatewayBacklogReader,
    ready_gateway_pods,
    summed,
    waiting_from_page,
)
from llmserve.autoscale.policy import History, PolicyConfig, ReplicaMetrics, Snapshot, decide
from llmserve.autoscale.state import decision_conditions
from llmserve.gateway.metrics import GatewayMetrics

CONFIG = PolicyConfig(min_replicas=1, max_replicas=10, queue_depth_target=4, batch_slots_per_replica=8)
T0 = 1_700_000_000.0


def gateway_page(held: dict[tuple[str, str, str], int], queued: dict[tuple[str, str, str], int]) -> str:
    """A page rendered by the gateway's own metrics object, as its /metrics serves it."""
    metrics = GatewayMetrics()
    for labels, count in held.items():
        metrics.held.labels(*labels).set(count)
    for labels, count in queued.items():
        metrics.queued.labels(*labels).set(count)
    metrics.model_in_flight.labels("llama", "ai", "llama").set(99)  # forwarded ones: the engines count those
    return metrics.render().decode()


def test_held_and_queued_requests_add_up_per_llmserve_not_per_model_name() -> None:
    page = gateway_page(
        held={("sleepy", "ai", "sleepy"): 2},
        queued={("llama", "ai", "llama"): 5, ("llama", "team-b", "llama"): 3},
    )
    assert waiting_from_page(page) == {("ai", "sleepy"): 2, ("ai", "llama"): 5, ("team-b", "llama"): 3}


def test_a_model_without_an_llmserve_and_an_idle_gateway_count_nothing() -> None:
    assert waiting_from_page(gateway_page(held={}, queued={("static-model", "", ""): 4})) == {}
    assert waiting_from_page("# HELP up x\n# TYPE up gauge\nup 1\n") == {}


def test_several_gateway_replicas_are_summed() -> None:
    one = waiting_from_page(gateway_page(held={}, queued={("llama", "ai", "llama"): 5}))
    two = waiting_from_page(
        gateway_page(held={("llama", "ai", "llama"): 1}, queued={("llama", "ai", "llama"): 2})
    )
    assert summed([one, two]) == {("ai", "llama"): 8}


def pod(
    name: str, ip: str | None, port: int | None = None, ready: bool = True, deleting: bool = False
) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": 8080}] + (
        [{"name": "metrics", "containerPort": port}] if port else []
    )
    meta: dict[str, Any] = {"name": name, "namespace": "llmserve-system"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "spec": {"containers": [{"name": "gateway", "ports": ports}]}, "status": status}


def test_only_ready_gateway_pods_are_read_on_their_named_metrics_port() -> None:
    pods = [
        pod("named", "10.0.0.1", port=9300),
        pod("unnamed", "10.0.0.2"),
        pod("starting", "10.0.0.3", ready=False),
        pod("leaving", "10.0.0.4", deleting=True),
        pod("no-ip", None),
    ]
    found = ready_gateway_pods(pods, default_port=9091)
    assert [(p.name, p.ip, p.metrics_port) for p in found] == [
        ("named", "10.0.0.1", 9300),
        ("unnamed", "10.0.0.2", 9091),
    ]


async def _serve(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


def _gateway_app(page: str, seen_headers: list[dict[str, str]]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        seen_headers.append(dict(request.headers))
        return web.Response(text=page, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@pytest.fixture
async def two_gateways() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """Two gateway replicas on one port at 127.0.0.1 and 127.0.0.2, each holding part of the queue."""
    port, seen = free_port(), []
    first = gateway_page(held={}, queued={("llama", "ai", "llama"): 5})
    second = gateway_page(held={}, queued={("llama", "ai", "llama"): 2})
    async for _ in _serve(_gateway_app(first, seen), "127.0.0.1", port):
        async for _ in _serve(_gateway_app(second, seen), "127.0.0.2", port):
            yield port, seen


async def test_the_reader_sums_every_gateway_and_sends_no_credentials(
    two_gateways: tuple[int, list[dict[str, str]]],
) -> None:
    port, seen = two_gateways
    asked: list[tuple[str | None, str]] = []

    async def list_pods(namespace: str | None, selector: str) -> list[dict[str, Any]]:
        asked.append((namespace, selector))
        return [pod("gw-a", "127.0.0.1", port), pod("gw-b", "127.0.0.2", port)]

    reader = GatewayBacklogReader("", "app.kubernetes.io/component=gateway", 9091, list_pods=list_pods)
    try:
        reading = await reader.read()
    finally:
        await reader.close()
    assert reading.complete and reading.gateways_read == 2
    assert reading.waiting("ai", "llama") == 7 and reading.waiting("ai", "other") == 0
    assert asked == [(None, "app.kubernetes.io/component=gateway")]  # "" namespace: every namespace
    assert all("authorization" not in {k.lower() for k in headers} for headers in seen)


async def test_one_unreadable_gateway_makes_the_reading_a_lower_bound_that_says_why(
    two_gateways: tuple[int, list[dict[str, str]]],
) -> None:
    port, _ = two_gateways

    async def list_pods(namespace: str | None, selector: str) -> list[dict[str, Any]]:
        return [pod("gw-a", "127.0.0.1", port), pod("gw-down", "127.0.0.3", port)]

    reader = GatewayBacklogReader("llmserve-system", "x=y", 9091, timeout_seconds=0.5, list_pods=list_pods)
    try:
        reading = await reader.read()
    finally:
        await reader.close()
    assert reading.waiting("ai", "llama") == 5
    assert not reading.complete
    assert reading.problem().startswith("gateway llmserve-system/gw-down could not be read (ConnectError")


async def test_a_failed_pod_listing_is_reported_and_one_reading_serves_every_llmserve_for_a_while() -> None:
    calls, now = [], [100.0]

    async def list_pods(namespace: str | None, selector: str) -> list[dict[str, Any]]:
        calls.append(now[0])
        raise RuntimeError("apiserver unavailable")

    reader = GatewayBacklogReader(
        "", "x=y", 9091, max_age_seconds=1.0, list_pods=list_pods, clock=lambda: now[0]
    )
    first = await reader.read()
    assert first.problem() == "the gateway pods could not be listed: RuntimeError: apiserver unavailable"
    assert await reader.read() is first and len(calls) == 1  # a second LLMServe in the same second
    now[0] += 1.5
    await reader.read()
    assert len(calls) == 2


# -- what the policy does with them --------------------------------------------------------------------


def snapshot(
    *replicas: ReplicaMetrics, in_gateway: float = 0, unread: bool = False, now: float = T0
) -> Snapshot:
    return Snapshot(
        now_seconds=now,
        current_replicas=len(replicas),
        ready_replicas=len(replicas),
        replicas=replicas,
        gateway_waiting_requests=in_gateway,
        gateway_unread=unread,
    )


FULL = ReplicaMetrics(requests_waiting=0, requests_running=8, kv_cache_fraction=0.3)  # a full batch, no queue


def test_requests_queued_in_the_gateway_scale_up_a_fleet_whose_engines_show_no_queue() -> None:
    blind = decide(snapshot(FULL, FULL), CONFIG, History(last_desired_replicas=2))
    assert blind.desired_replicas == 2  # full batches on target: without the gateway nothing moves
    seeing = decide(snapshot(FULL, FULL, in_gateway=24), CONFIG, History(last_desired_replicas=2))
    # (8 running + 12 waiting per replica) / (8 slots + 4 queue target) = 1.67 -> 4 replicas
    assert seeing.desired_replicas == 4
    assert seeing.reason == "queue depth 12.0/replica (24 held in the gateway) above target 4"


def test_an_unreadable_gateway_holds_a_scale_down_and_says_so_in_scaling_active() -> None:
    idle = ReplicaMetrics(requests_waiting=0, requests_running=0, kv_cache_fraction=0.0)
    history = History(last_desired_replicas=4, last_active_seconds=T0 - 10_000)
    config = PolicyConfig(
        min_replicas=0, max_replicas=10, scale_down_delay_seconds=0, scale_to_zero_idle_seconds=60
    )
    assert decide(snapshot(idle, idle, idle, idle), config, history).desired_replicas == 0
    snap = snapshot(idle, idle, idle, idle, unread=True)
    decision = decide(snap, config, history)
    assert decision.desired_replicas == 4
    assert decision.reason == "the gateway's held requests could not be read; holding instead of scaling down"
    problem = "gateway llmserve-system/gw-a could not be read (HTTP 503)"
    active = decision_conditions(decision, snap, config, "", {}, 1, problem)[1]
    assert (active.type, active.status, active.reason) == (
        "ScalingActive",
        "True",
        "GatewayMetricsUnavailable",
    )
    assert problem in active.message


def test_held_requests_keep_a_model_from_being_scaled_to_zero_as_idle() -> None:
    idle = ReplicaMetrics(requests_waiting=0, requests_running=0, kv_cache_fraction=0.0)
    config = PolicyConfig(min_replicas=0, max_replicas=4, scale_to_zero_idle_seconds=60)
    history = History(last_desired_replicas=1, last_active_seconds=T0 - 10_000)
    decision = decide(snapshot(idle, in_gateway=1), config, history)
    assert decision.desired_replicas == 1 and not decision.scaled_to_zero


def test_with_an_slo_the_gateway_s_requests_join_the_demand_model_s_backlog_and_its_reason() -> None:
    from llmserve.api.llmserve import LLMServeSpec
    from llmserve.autoscale.demand_spec import DemandTracker
    from llmserve.autoscale.histogram import Histogram
    from llmserve.autoscale.window import EngineCounters
    from llmserve.sim.metrics import PER_TOKEN_BUCKETS, TTFT_BUCKETS

    slo = {"timeToFirstTokenSeconds": 1, "interTokenLatencySeconds": 0.05, "percentile": 90}
    spec = LLMServeSpec.model_validate(
        {"model": {"name": "m"}, "engine": {"kind": "simulator", "args": ["--max-num-seqs=8"]},
         "autoscaling": {"slo": slo}}
    )  # fmt: skip
    config = PolicyConfig(min_replicas=1, max_replicas=10, batch_slots_per_replica=8)

    def scrape(finished: float) -> dict[str, ReplicaMetrics]:
        ttft = Histogram.of(TTFT_BUCKETS, [0.2] * int(finished))  # prefilled requests: the prompt mix
        counters = EngineCounters(
            finished, finished * 1000, finished * 100, ttft, Histogram.empty(PER_TOKEN_BUCKETS)
        )
        return {"pod-0": ReplicaMetrics(0, 8, 0.3, counters)}

    def estimates(in_gateway: float) -> Any:
        tracker = DemandTracker()
        tracker.estimate(spec, config, scrape(0), [], T0, 1, gateway_requests=in_gateway)
        return tracker.estimate(spec, config, scrape(50), [], T0 + 10, 1, gateway_requests=in_gateway)

    without, with_gateway = estimates(0), estimates(3000)
    assert without.backlog_requests == 0 and with_gateway.backlog_requests == 3000
    assert with_gateway.replicas_for_backlog > without.replicas_for_backlog
    assert with_gateway.describe().endswith("waiting (3000 held in the gateway)")


async def test_an_unreadable_gateway_is_logged_once_per_streak_for_every_llmserve_and_its_recovery_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from llmserve.controller import autoscaling

    failing = [True]

    async def list_pods(namespace: str | None, selector: str) -> list[dict[str, Any]]:
        if failing[0]:
            raise RuntimeError("apiserver unavailable")
        return []

    reader = GatewayBacklogReader("", "x=y", 9091, max_age_seconds=0, list_pods=list_pods)
    monkeypatch.setattr(autoscaling, "gateway_reader", lambda: reader)
    scalers = [autoscaling.Autoscaler(("ai", "llama")), autoscaling.Autoscaler(("ai", "mistral"))]
    caplog.set_level("INFO", logger="llmserve.autoscale.gateway_backlog")
    problem = "the gateway pods could not be listed: RuntimeError: apiserver unavailable"
    for _ in range(3):
        for scaler in scalers:
            assert await scaler._read_gateway() == (0.0, problem)
    failing[0] = False
    for _ in range(2):
        for scaler in scalers:
            assert await scaler._read_gateway() == (0.0, "")
    events = [r.getMessage().split()[0] for r in caplog.records]
    assert events == ["event=gateway_read_failed", "event=gateway_read_recovered"]
