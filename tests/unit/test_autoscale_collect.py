"""Signal collection: the vLLM metrics parser, direct scrapes over real sockets, and the Prometheus source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from hack.devcluster.processes import free_port
from llmserve.autoscale.collect import (
    DirectScraper,
    MetricsFormatError,
    PrometheusCollector,
    Target,
    parse_engine_metrics,
    prometheus_query,
)

VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 32.0
vllm:num_requests_running{engine="1",model_name="llama"} 30.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 7.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 5.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.9
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.7
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="llama"} 3.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="llama"} 4.0
vllm:time_to_first_token_seconds_count{model_name="llama"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="llama"} 0.5
"""

LEGACY_PAGE = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="llama"} 3
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="llama"} 0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="llama"} 0.25
"""


def test_queues_add_up_and_kv_use_averages_across_data_parallel_engines() -> None:
    metrics = parse_engine_metrics(VLLM_PAGE)
    assert (metrics.requests_waiting, metrics.requests_running) == (12.0, 62.0)
    assert metrics.kv_cache_fraction == pytest.approx(0.8)


def test_falls_back_to_the_legacy_gpu_cache_metric() -> None:
    assert parse_engine_metrics(LEGACY_PAGE).kv_cache_fraction == 0.25


def test_a_page_without_vllm_gauges_is_refused() -> None:
    with pytest.raises(MetricsFormatError, match="vllm:num_requests_waiting"):
        parse_engine_metrics("# TYPE up gauge\nup 1\n")


def test_the_prometheus_query_names_every_signal_and_pod() -> None:
    query = prometheus_query("ai", ["llama-7c9-abcde", "llama-7c9-fghij"])
    assert 'namespace="ai"' in query and "llama\\-7c9\\-abcde|llama\\-7c9\\-fghij" in query
    assert "vllm:kv_cache_usage_perc" in query and "vllm:gpu_cache_usage_perc" in query


async def _serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, host, port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def _engine_app(delay_seconds: float) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        await asyncio.sleep(delay_seconds)
        return web.Response(text=VLLM_PAGE, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@pytest.fixture
async def engine_port() -> AsyncIterator[int]:
    """Fake engines on one port: a quick one at 127.0.0.1 and a hung one at 127.0.0.2."""
    async for port in _serve(_engine_app(0.0)):
        async for _ in _serve(_engine_app(1.0), host="127.0.0.2", port=port):
            yield port


async def test_direct_scrapes_report_each_unreachable_replica_by_name(engine_port: int) -> None:
    scraper = DirectScraper(port=engine_port, timeout_seconds=0.5)
    try:
        result = await scraper.collect([Target("good", "ai", "127.0.0.1"), Target("down", "ai", "127.0.0.3")])
    finally:
        await scraper.close()
    assert result.metrics["good"].requests_waiting == 12
    assert set(result.errors) == {"down"} and "ConnectError" in result.errors["down"]


async def test_a_hung_replica_times_out_without_holding_up_the_others(engine_port: int) -> None:
    scraper = DirectScraper(port=engine_port, timeout_seconds=0.3)
    started = asyncio.get_running_loop().time()
    try:
        result = await scraper.collect(
            [Target("quick", "ai", "127.0.0.1"), Target("hung", "ai", "127.0.0.2")]
        )
    finally:
        await scraper.close()
    assert asyncio.get_running_loop().time() - started < 0.9
    assert set(result.metrics) == {"quick"}
    assert "Timeout" in result.errors["hung"]


@pytest.fixture
async def prometheus_url() -> AsyncIterator[str]:
    """A fake Prometheus answering /api/v1/query with one vector, as the real HTTP API shapes it."""

    def series(name: str, pod: str, value: float) -> dict[str, Any]:
        return {
            "metric": {"__name__": name, "namespace": "ai", "pod": pod},
            "value": [1700000000.0, str(value)],
        }

    async def query(request: web.Request) -> web.Response:
        assert "vllm:num_requests_waiting" in request.query["query"]
        result = [
            series("vllm:num_requests_waiting", "llama-a", 6),
            series("vllm:num_requests_running", "llama-a", 32),
            series("vllm:kv_cache_usage_perc", "llama-a", 0.5),
        ]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    async for port in _serve(app):
        yield f"http://127.0.0.1:{port}"


async def test_prometheus_source_reads_the_same_signals_and_flags_missing_pods(prometheus_url: str) -> None:
    collector = PrometheusCollector(prometheus_url)
    result = await collector.collect(
        [Target("llama-a", "ai", "10.0.0.1"), Target("llama-b", "ai", "10.0.0.2")]
    )
    assert result.metrics["llama-a"].requests_waiting == 6
    assert result.metrics["llama-a"].kv_cache_fraction == 0.5
    assert "no series" in result.errors["llama-b"]


async def test_an_unreachable_prometheus_is_an_error_for_every_pod() -> None:
    collector = PrometheusCollector(f"http://127.0.0.1:{free_port()}", timeout_seconds=0.5)
    result = await collector.collect([Target("llama-a", "ai", "10.0.0.1")])
    assert not result.metrics and "failed" in result.errors["llama-a"]
