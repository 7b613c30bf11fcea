"""The one engine-metrics parser: recorded-format vLLM pages read the same way by the autoscaler, the
gateway's load scrape, the Prometheus source and the cost meter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from llmserve.autoscale.collect import Target, metrics_from_prometheus, parse_engine_metrics
from llmserve.autoscale.policy import ReplicaMetrics
from llmserve.cost.counters import CounterFormatError, parse_generation_tokens
from llmserve.engine_metrics import (
    GAUGES,
    EngineLoad,
    MetricsFormatError,
    parse_engine_load,
    read_page,
)
from llmserve.gateway.registry import Backend, ModelRoute, Registry
from llmserve.gateway.scrape import Scraper

PAGES = Path(__file__).parent / "engine_pages"


def page(name: str) -> str:
    return (PAGES / name).read_text()


def test_data_parallel_ranks_add_their_queues_and_average_their_kv_cache() -> None:
    load = parse_engine_load(page("vllm_v0_11_data_parallel.txt"))
    assert load == EngineLoad(
        requests_waiting=9.0, requests_running=94.0, kv_cache_fraction=pytest.approx(0.68)
    )


def test_the_autoscaler_reads_the_same_load_as_the_shared_parser() -> None:
    text = page("vllm_v0_11_data_parallel.txt")
    metrics, load = parse_engine_metrics(text), parse_engine_load(text)
    assert (metrics.requests_waiting, metrics.requests_running, metrics.kv_cache_fraction) == (
        load.requests_waiting,
        load.requests_running,
        load.kv_cache_fraction,
    )


def test_counters_add_up_over_ranks_and_finish_reasons_and_the_new_latency_name_wins() -> None:
    counters = parse_engine_metrics(page("vllm_v0_11_data_parallel.txt")).counters
    assert counters is not None
    assert (counters.requests_finished, counters.prompt_tokens, counters.generation_tokens) == (
        500.0,
        650000.0,
        100000.0,
    )
    ttft = counters.time_to_first_token
    assert ttft is not None and ttft.cumulative_counts == (420.0, 500.0) and ttft.sum_seconds == 52.0
    itl = counters.inter_token_latency  # the deprecated histogram beside it (count 1) is not mixed in
    assert itl is not None and itl.count == 69680.0 and itl.sum_seconds == 2500.0


def test_a_v0_engine_is_read_through_the_older_names() -> None:
    metrics = parse_engine_metrics(page("vllm_v0_6_v0engine.txt"))
    assert (metrics.requests_waiting, metrics.requests_running) == (3.0, 24.0)
    assert metrics.kv_cache_fraction == pytest.approx(0.6124)
    assert metrics.counters is not None and metrics.counters.requests_finished == 600.0
    itl = metrics.counters.inter_token_latency
    assert itl is not None and itl.count == 89611.0


def test_the_new_kv_gauge_wins_over_the_deprecated_one_printed_beside_it() -> None:
    assert parse_engine_load(page("vllm_v0_10_both_kv_names.txt")).kv_cache_fraction == pytest.approx(0.3)


def test_kv_use_is_clamped_to_a_fraction() -> None:
    text = "vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 1.7\n"
    assert parse_engine_load(text).kv_cache_fraction == 1.0


def test_a_page_without_the_waiting_gauge_is_refused_with_its_name() -> None:
    with pytest.raises(MetricsFormatError, match="vllm:num_requests_waiting"):
        parse_engine_load("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n")


def test_broken_prometheus_text_is_a_format_error() -> None:
    with pytest.raises(MetricsFormatError, match="unparsable"):
        parse_engine_load('vllm:num_requests_waiting{engine="0" 3\n')


def test_prometheus_series_get_the_same_aggregation_as_a_scraped_page() -> None:
    text = page("vllm_v0_11_data_parallel.txt")
    samples = read_page(text, GAUGES).samples
    series = [
        {"metric": {"__name__": name, "pod": "p", "engine": str(rank)}, "value": [0, str(value)]}
        for name, values in samples.items()
        for rank, value in enumerate(values)
    ]
    result = metrics_from_prometheus(series, [Target("p", "ai", "10.0.0.1")])
    assert result.metrics["p"] == ReplicaMetrics(
        requests_waiting=9.0, requests_running=94.0, kv_cache_fraction=pytest.approx(0.68)
    )


def test_the_cost_meter_sums_output_tokens_over_ranks() -> None:
    assert parse_generation_tokens(page("vllm_v0_11_data_parallel.txt")) == 100000.0
    with pytest.raises(CounterFormatError, match="vllm:generation_tokens_total"):
        parse_generation_tokens(page("vllm_v0_10_both_kv_names.txt"))


@pytest.fixture
async def engine_url() -> AsyncIterator[str]:
    """A loopback server answering /metrics with the data-parallel page."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=page("vllm_v0_11_data_parallel.txt"), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_gateways_scrape_routes_on_the_load_the_autoscaler_scales_on(engine_url: str) -> None:
    registry = Registry()
    backend = Backend(engine_url)
    registry.replace("test", [ModelRoute("llama", (backend,))])
    async with aiohttp.ClientSession() as session:
        await Scraper(registry, session, interval_seconds=1.0)._scrape(backend)
    scaled_on = parse_engine_metrics(page("vllm_v0_11_data_parallel.txt"))
    routed_on = registry.load(backend)
    assert (routed_on.scraped_waiting, routed_on.scraped_running) == (9.0, 94.0)
    assert routed_on.kv_usage_fraction == scaled_on.kv_cache_fraction == pytest.approx(0.68)
