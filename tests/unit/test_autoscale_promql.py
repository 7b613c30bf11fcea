"""SLO signals from Prometheus: the rate()/histogram_quantile() queries, their answers, and a fake server on loopback."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from llmserve.autoscale.collect import PrometheusCollector, Target
from llmserve.autoscale.demand import DemandModel
from llmserve.autoscale.promql import (
    SloWindows,
    rates_from_signals,
    signals_from_vector,
    window_query,
)
from llmserve.autoscale.replica_model import ReplicaModel, SloTargets

PODS = ["llama-7c9-abcde", "llama-7c9-fghij"]


def _parts(query: str) -> dict[str, str]:
    """signal -> its sub-expression, split the way Prometheus evaluates the `or` of label_replace()s."""
    found = re.findall(r'label_replace\((.*?), "signal", "(\w+)", "", ""\)', query)
    return {signal: expression for expression, signal in found}


def test_every_signal_is_one_tagged_sub_expression_over_the_pods_and_the_window() -> None:
    parts = _parts(window_query("ai", PODS, 60, 0.9))
    assert set(parts) == {
        "finished_per_second", "in_flight_change", "prefilled_per_second", "prompt_tokens_per_second",
        "generation_tokens_per_second", "running_per_replica", "ttft_quantile", "ttft_count", "ttft_sum",
        "itl_quantile", "itl_count", "itl_sum",
    }  # fmt: skip
    for expression in parts.values():
        assert 'namespace="ai",pod=~"llama\\-7c9\\-abcde|llama\\-7c9\\-fghij"' in expression
        assert "[60s]" in expression
    assert parts["finished_per_second"] == (
        'sum(rate(vllm:request_success_total{namespace="ai",pod=~"llama\\-7c9\\-abcde|llama\\-7c9\\-fghij"}[60s]))'
    )
    assert parts["ttft_quantile"].startswith("histogram_quantile(0.9, sum by (le) (rate(")
    assert "vllm:time_to_first_token_seconds_bucket" in parts["ttft_quantile"]
    # vLLM >= 0.11 exports both ITL names; `or` counts the first one present, never both.
    itl = parts["itl_quantile"]
    assert itl.index("vllm:inter_token_latency_seconds_bucket") < itl.index(" or ")
    assert itl.index(" or ") < itl.index("vllm:time_per_output_token_seconds_bucket")


def test_a_short_window_is_widened_to_what_rate_can_answer() -> None:
    query = window_query("ai", PODS, 15, 0.99)
    assert "[30s]" in query and "[15s]" not in query
    assert "histogram_quantile(0.99," in query


def test_a_quantile_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="quantile"):
        window_query("ai", PODS, 60, 90)


def _vector(values: dict[str, float | str]) -> list[dict[str, Any]]:
    return [{"metric": {"signal": k}, "value": [1700000000.0, str(v)]} for k, v in values.items()]


ANSWER = {
    "finished_per_second": 9.0,
    "in_flight_change": 60.0,  # 60 more in flight at the end of 60 s: 1 req/s arrived without finishing
    "prefilled_per_second": 10.0,
    "prompt_tokens_per_second": 20000.0,
    "generation_tokens_per_second": 1350.0,
    "running_per_replica": 24.0,
    "ttft_quantile": 2.5,
    "ttft_count": 600.0,
    "ttft_sum": 900.0,
    "itl_quantile": 0.04,
    "itl_count": 80000.0,
    "itl_sum": 2400.0,
}


def test_the_answer_becomes_the_windows_rates_and_latency() -> None:
    rates = rates_from_signals(signals_from_vector(_vector(ANSWER)), 60, 0.9)
    assert rates is not None
    assert rates.arrivals_per_second == pytest.approx(10.0)
    assert rates.prompt_tokens_per_request == pytest.approx(2000.0)
    assert rates.output_tokens_per_request == pytest.approx(150.0)
    assert rates.running_per_replica == 24.0
    assert rates.time_to_first_token is not None and rates.time_to_first_token.quantile(0.9) == 2.5
    assert rates.time_to_first_token.mean == pytest.approx(1.5)
    assert rates.inter_token_latency is not None and rates.inter_token_latency.count == 80000.0


def test_a_quantile_of_no_observations_is_unknown_not_zero() -> None:
    answer = {**ANSWER, "ttft_quantile": "NaN", "ttft_count": 0.0}
    rates = rates_from_signals(signals_from_vector(_vector(answer)), 60, 0.9)
    assert rates is not None and rates.time_to_first_token is None


def test_without_counters_there_is_nothing_to_size_on() -> None:
    assert rates_from_signals(signals_from_vector(_vector({"running_per_replica": 3.0})), 60, 0.9) is None


def test_series_without_a_signal_label_or_with_junk_values_are_ignored() -> None:
    series = [{"metric": {}, "value": [0, "1"]}, {"metric": {"signal": "ttft_count"}, "value": [0, "x"]}]
    assert signals_from_vector(series) == {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake_prometheus() -> AsyncIterator[tuple[str, list[str]]]:
    """A Prometheus HTTP API on loopback: answers each tagged sub-expression of an instant query from
    ANSWER, and only if it names the pods' selector; records the queries it was asked."""
    asked: list[str] = []

    async def query(request: web.Request) -> web.Response:
        text = request.query.get("query") or (await request.post()).get("query", "")
        assert isinstance(text, str)
        asked.append(text)
        if "fail" in text:
            return web.Response(status=503, text="overloaded")
        result = [
            {"metric": {"signal": signal}, "value": [1700000000.0, str(ANSWER[signal])]}
            for signal, expression in _parts(text).items()
            if signal in ANSWER and 'namespace="ai"' in expression
        ]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        await runner.cleanup()


async def test_the_demand_model_sees_a_ttft_breach_that_prometheus_reports(
    fake_prometheus: tuple[str, list[str]],
) -> None:
    url, asked = fake_prometheus
    collector = PrometheusCollector(url)
    targets = [Target(p, "ai", "10.0.0.1") for p in PODS]
    windows = await collector.slo_windows(targets, SloWindows(60, 15, 0.9))
    assert windows is not None and windows[0] is not None and windows[1] is not None
    assert len(asked) == 2 and "[60s]" in asked[0] and "[30s]" in asked[1]
    model = ReplicaModel(20000, 0.02, 0.0002, 1e-7, 32, "test")
    demand = DemandModel(model, SloTargets(1.0, 0.05, 0.9)).estimate(
        1000.0, 2, 2, backlog_requests=0, startup_seconds=60, batch_fill=0.8, windows=windows
    )
    assert demand is not None
    assert demand.arrivals_per_second == pytest.approx(10.0)
    assert demand.prompt_tokens_per_request == pytest.approx(2000.0)
    assert demand.latency_ratio == pytest.approx(2.5)  # TTFT p90 2.5 s against a 1 s target
    assert "TTFT p90 2.50s" in demand.latency_description


async def test_a_failing_prometheus_gives_no_windows_instead_of_an_error(
    fake_prometheus: tuple[str, list[str]],
) -> None:
    url, _ = fake_prometheus
    collector = PrometheusCollector(url, timeout_seconds=0.5)
    assert (
        await collector.slo_windows([Target("fail-pod", "ai", "10.0.0.1")], SloWindows(60, 15, 0.9)) is None
    )


def test_the_operator_asks_prometheus_for_the_demand_models_windows_at_the_slo_percentile() -> None:
    from llmserve.api.llmserve import LLMServeSpec
    from llmserve.autoscale.demand_spec import DemandTracker

    def spec(autoscaling: dict[str, Any]) -> LLMServeSpec:
        return LLMServeSpec.model_validate(
            {"model": {"name": "m"}, "engine": {"kind": "simulator"}, "autoscaling": autoscaling}
        )

    slo = {"timeToFirstTokenSeconds": 1, "interTokenLatencySeconds": 0.05, "percentile": 99}
    tracker = DemandTracker()
    assert tracker.prometheus_windows(spec({"metricsSource": "prometheus", "slo": slo})) == SloWindows(
        60, 15, 0.99
    )
    assert tracker.prometheus_windows(spec({"metricsSource": "prometheus"})) is None
