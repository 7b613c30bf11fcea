"""Engine /metrics parsing for routing."""

from __future__ import annotations

from llmserve.gateway.scrape import EngineLoad, parse_engine_metrics

TEXT = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.25
vllm:num_requests_running{engine="1",model_name="llama"} 1.0
vllm:prompt_tokens_total{engine="0",model_name="llama"} 1234.0
"""


def test_gauges_are_summed_over_engines() -> None:
    assert parse_engine_metrics(TEXT) == EngineLoad(running=4.0, waiting=2.0, kv_usage_fraction=0.25)


def test_the_legacy_gpu_cache_metric_is_used_when_the_new_one_is_missing() -> None:
    text = 'vllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
    assert parse_engine_metrics(text) == EngineLoad(0.0, 0.0, 0.5)


def test_text_without_vllm_gauges_gives_nothing() -> None:
    assert parse_engine_metrics("# nothing here\nprocess_cpu_seconds_total 3\n") is None
