"""vLLM-compatible Prometheus metrics (names, types, labels and buckets of vLLM v1) on a private registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from llmserve.sim.batching import FinishedRequest, FinishReason, StepResult

__all__ = ["CONTENT_TYPE_LATEST", "EngineMetrics"]

# Bucket boundaries copied from vllm/v1/metrics/loggers.py (PrometheusStatLogger).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
PER_TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
LABELS = ("model_name", "engine")


def build_1_2_5_buckets(max_value: int) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to max_value (vLLM's token-count histogram buckets)."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return buckets
            buckets.append(float(value))
        exponent += 1


class EngineMetrics:
    """The /metrics of one simulated engine. All durations are in simulated seconds."""

    def __init__(
        self,
        model_name: str,
        max_model_len: int,
        legacy_gpu_cache_metric: bool = False,
        engine_index: str = "0",
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._engine_index = engine_index
        r = self.registry
        labels = (model_name, engine_index)

        # Each helper registers a metric family and returns its child for this engine's labels.
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=r).labels(*labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=r).labels(*labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] | list[float]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=r).labels(*labels)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.gpu_cache_usage: Gauge | None = None
        if legacy_gpu_cache_metric:
            self.gpu_cache_usage = gauge(
                "vllm:gpu_cache_usage_perc",
                "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            )
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*LABELS, "finished_reason"],
            registry=r,
        )
        self.success = {reason: success.labels(*labels, reason.value) for reason in FinishReason}
        token_buckets = build_1_2_5_buckets(max_model_len)
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            PER_TOKEN_BUCKETS,
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            PER_TOKEN_BUCKETS,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inference_time = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )

        self.prefill_time = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.decode_time = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )

    def set_cache_config(
        self, block_size: int, num_gpu_blocks: int, gpu_memory_utilization: float, cache_dtype: str
    ) -> None:
        """vllm:cache_config_info, an info-style gauge fixed at 1 whose labels describe the KV cache."""
        info = {
            "block_size": str(block_size),
            "cache_dtype": cache_dtype,
            "gpu_memory_utilization": str(gpu_memory_utilization),
            "num_gpu_blocks": str(num_gpu_blocks),
            "engine": self._engine_index,
        }
        gauge = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            list(info),
            registry=self.registry,
        )
        gauge.labels(**info).set(1)

    def set_scheduler_state(self, num_running: int, num_waiting: int, kv_usage_fraction: float) -> None:
        self.running.set(num_running)
        self.waiting.set(num_waiting)
        self.kv_usage.set(kv_usage_fraction)
        if self.gpu_cache_usage is not None:
            self.gpu_cache_usage.set(kv_usage_fraction)

    def record_step(self, result: StepResult) -> None:
        if result.preempted_ids:
            self.preemptions.inc(len(result.preempted_ids))
        if result.num_prompt_tokens:
            self.prompt_tokens.inc(result.num_prompt_tokens)
        if result.tokens:
            self.generation_tokens.inc(result.num_generation_tokens)
        if result.num_prefix_cache_query_tokens:
            self.prefix_cache_queries.inc(result.num_prefix_cache_query_tokens)
            self.prefix_cache_hits.inc(result.num_prefix_cache_hit_tokens)
        for seconds in result.time_to_first_token_seconds:
            self.ttft.observe(seconds)
        for seconds in result.inter_token_seconds:
            self.itl.observe(seconds)
            self.tpot.observe(seconds)
        for finished in result.finished:
            self.record_finished(finished)

    def record_finished(self, finished: FinishedRequest) -> None:
        self.success[finished.finish_reason].inc()
        self.e2e.observe(finished.e2e_seconds)
        self.queue_time.observe(finished.queue_seconds)
        self.inference_time.observe(finished.finish_time - finished.first_scheduled_time)
        self.prefill_time.observe(finished.first_token_time - finished.first_scheduled_time)
        self.decode_time.observe(finished.finish_time - finished.first_token_time)
        self.request_prompt_tokens.observe(finished.prompt_tokens)
        self.request_generation_tokens.observe(finished.output_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
