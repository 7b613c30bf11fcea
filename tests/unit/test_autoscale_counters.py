"""Reading vLLM's counters and latency histograms from a /metrics page (the simulator's and hand-written ones)."""

from __future__ import annotations

import pytest

from llmserve.autoscale.collect import parse_engine_metrics
from llmserve.sim.batching import Engine, EngineConfig
from llmserve.sim.metrics import EngineMetrics
from llmserve.sim.profiles import resolve_profile

DATA_PARALLEL_PAGE = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 10.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="m"} 8.0
vllm:request_success_created{engine="1",finished_reason="stop",model_name="m"} 1.7e9
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 12000.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 8000.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 900.0
vllm:generation_tokens_total{engine="1",model_name="m"} 100.0
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.05",model_name="m"} 90.0
vllm:time_per_output_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 100.0
vllm:time_per_output_token_seconds_sum{engine="0",model_name="m"} 4.0
vllm:time_per_output_token_seconds_count{engine="0",model_name="m"} 100.0
vllm:time_per_output_token_seconds_bucket{engine="1",le="0.05",model_name="m"} 10.0
vllm:time_per_output_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 100.0
vllm:time_per_output_token_seconds_sum{engine="1",model_name="m"} 9.0
vllm:time_per_output_token_seconds_count{engine="1",model_name="m"} 100.0
"""


def test_counters_and_histograms_add_up_across_data_parallel_engines_and_finish_reasons() -> None:
    counters = parse_engine_metrics(DATA_PARALLEL_PAGE).counters
    assert counters is not None
    assert (counters.requests_finished, counters.prompt_tokens, counters.generation_tokens) == (
        20,
        20000,
        1000,
    )
    # Older vLLM names per-token latency time_per_output_token_seconds: it stands in for the ITL histogram.
    itl = counters.inter_token_latency
    assert itl is not None and itl.count == 200 and itl.cumulative_counts == (100, 200)
    assert itl.sum_seconds == pytest.approx(13.0)
    assert counters.time_to_first_token is None


def test_a_page_without_counters_still_gives_the_gauges() -> None:
    page = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 3\n"
    metrics = parse_engine_metrics(page)
    assert metrics.requests_waiting == 3 and metrics.counters is None


def test_the_simulators_page_carries_every_signal_the_slo_policy_reads() -> None:
    metrics = EngineMetrics("llama", max_model_len=8192)
    engine = Engine(resolve_profile("NVIDIA-H100-80GB-HBM3", "llama-3.1-8b"), EngineConfig())
    for index in range(12):
        engine.submit(f"r{index}", 600, 40, 0.0)
    now = 0.0
    while engine.has_work:
        result = engine.step(now)
        metrics.record_step(result)
        now = result.end_time
    page = metrics.render().decode()
    # vLLM v1 names (vllm/v1/metrics/loggers.py); prefill + decode time split each request's time in the batch
    for name in ("vllm:request_prefill_time_seconds_count", "vllm:request_decode_time_seconds_count"):
        assert f'{name}{{engine="0",model_name="llama"}} 12.0' in page
    counters = parse_engine_metrics(page).counters
    assert counters is not None
    assert (counters.requests_finished, counters.prompt_tokens, counters.generation_tokens) == (12, 7200, 480)
    assert counters.time_to_first_token is not None and counters.time_to_first_token.count == 12
    assert counters.inter_token_latency is not None and counters.inter_token_latency.count == 12 * 39
    assert counters.queue_time is not None and counters.queue_time.count == 12
