"""vLLM-compatible Prometheus metrics (names, types, labels and buckets of vLLM v1) on a private registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from llmserve import engine_metrics_names as names
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
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
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
    """The /metrics of one simulated engine. All durations are in simulated seconds.

    By default it exports what a default `vllm serve` of vLLM `VLLM_VERSION` exports (the families
    llmserve or a dashboard may read; see docs/simulator.md). `vllm_version` makes it export the names
    of an older release instead, so the readers' fallbacks to renamed-away names can be tested against
    a real page: e.g. 0.10.1 has only `vllm:time_per_output_token_seconds`, 0.9.0 only
    `vllm:gpu_cache_usage_perc`.
    """

    def __init__(
        self,
        model_name: str,
        max_model_len: int,
        legacy_gpu_cache_metric: bool = False,
        engine_index: str = "0",
        vllm_version: str = names.VLLM_VERSION,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._engine_index = engine_index
        r = self.registry
        labels = (model_name, engine_index)
        release = names.version_tuple(vllm_version)
        legacy = names.legacy_names_exported_by(vllm_version)
        missing = names.new_names_missing_from(vllm_version)
        after_0_12 = release > (0, 12, 0)  # families first seen after 0.12.0 (0.33.0 has them)

        # Each helper registers a metric family and returns its child for this engine's labels.
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=r).labels(*labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=r).labels(*labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] | list[float]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=r).labels(*labels)

        def optional_histogram(
            name: str, exported: bool, doc: str, buckets: tuple[float, ...] | list[float]
        ) -> Histogram | None:
            return histogram(name, doc, buckets) if exported else None

        self.running = gauge(names.RUNNING, "Number of requests in model execution batches.")
        self.waiting = gauge(names.WAITING, "Number of requests waiting to be processed.")
        self.waiting_by_reason: dict[str, Gauge] = {}
        if after_0_12:
            by_reason = Gauge(
                names.WAITING_BY_REASON,
                "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling "
                "capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, "
                "blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
                [*LABELS, "reason"],
                registry=r,
            )
            self.waiting_by_reason = {why: by_reason.labels(*labels, why) for why in names.WAITING_REASONS}
        self.kv_usage: Gauge | None = None
        if names.KV_CACHE not in missing:
            self.kv_usage = gauge(names.KV_CACHE, "KV-cache usage. 1 means 100 percent usage.")
        self.gpu_cache_usage: Gauge | None = None
        if legacy_gpu_cache_metric or names.KV_CACHE_LEGACY in legacy:
            self.gpu_cache_usage = gauge(
                names.KV_CACHE_LEGACY,
                "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            )
        self.preemptions = counter(names.PREEMPTIONS, "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter(names.PROMPT_TOKENS, "Number of prefill tokens processed.")
        self.generation_tokens = counter(names.GENERATION_TOKENS, "Number of generation tokens processed.")
        self.prefix_cache_queries = counter(
            names.PREFIX_CACHE_QUERIES, "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_cache_hits = counter(
            names.PREFIX_CACHE_HITS, "Prefix cache hits, in terms of number of cached tokens."
        )
        self.prompt_tokens_cached: Counter | None = None
        if after_0_12:
            self.prompt_tokens_cached = counter(
                names.PROMPT_TOKENS_CACHED, "Number of cached prompt tokens (local + external)."
            )
        success = Counter(
            names.FINISHED,
            "Count of successfully processed requests.",
            [*LABELS, "finished_reason"],
            registry=r,
        )
        self.success = {reason: success.labels(*labels, reason.value) for reason in FinishReason}
        if after_0_12:  # vLLM creates every reason's series at 0; the simulator never errs or repeats
            for reason in names.FINISHED_REASONS:
                success.labels(*labels, reason)
        token_buckets = build_1_2_5_buckets(max_model_len)
        self.request_prompt_tokens = histogram(
            names.REQUEST_PROMPT_TOKENS, "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            names.REQUEST_GENERATION_TOKENS, "Number of generation tokens processed.", token_buckets
        )
        self.iteration_tokens = histogram(
            names.ITERATION_TOKENS, "Histogram of number of tokens per engine_step.", ITERATION_TOKENS_BUCKETS
        )
        self.ttft = histogram(names.TTFT, "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.itl = optional_histogram(
            names.ITL,
            names.ITL not in missing,
            "Histogram of inter-token latency in seconds.",
            PER_TOKEN_BUCKETS,
        )
        self.tpot = optional_histogram(
            names.ITL_LEGACY,
            names.ITL_LEGACY in legacy,
            "Histogram of time per output token in seconds."
            + ("" if names.ITL in missing else "DEPRECATED: Use vllm:inter_token_latency_seconds instead."),
            PER_TOKEN_BUCKETS,
        )
        self.request_tpot = optional_histogram(
            names.REQUEST_TPOT,
            release >= (0, 11, 0),
            "Histogram of time_per_output_token_seconds per request.",
            PER_TOKEN_BUCKETS,
        )
        self.e2e = histogram(
            names.E2E_LATENCY,
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.queue_time = histogram(
            names.QUEUE_TIME,
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inference_time = histogram(
            names.INFERENCE_TIME,
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )

        self.prefill_time = histogram(
            names.PREFILL_TIME,
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.decode_time = histogram(
            names.DECODE_TIME,
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
        if self.waiting_by_reason:  # nothing defers a request in the simulator: all wait for capacity
            self.waiting_by_reason["capacity"].set(num_waiting)
            self.waiting_by_reason["deferred"].set(0)
        if self.kv_usage is not None:
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
            if self.prompt_tokens_cached is not None:
                self.prompt_tokens_cached.inc(result.num_prefix_cache_hit_tokens)
        self.iteration_tokens.observe(result.num_prefill_tokens + result.num_decode_tokens)
        for seconds in result.time_to_first_token_seconds:
            self.ttft.observe(seconds)
        for seconds in result.inter_token_seconds:
            for per_token in (self.itl, self.tpot):
                if per_token is not None:
                    per_token.observe(seconds)
        for finished in result.finished:
            self.record_finished(finished)

    def record_finished(self, finished: FinishedRequest) -> None:
        self.success[finished.finish_reason].inc()
        self.e2e.observe(finished.e2e_seconds)
        self.queue_time.observe(finished.queue_seconds)
        self.inference_time.observe(finished.finish_time - finished.first_scheduled_time)
        self.prefill_time.observe(finished.first_token_time - finished.first_scheduled_time)
        decode_seconds = finished.finish_time - finished.first_token_time
        self.decode_time.observe(decode_seconds)
        if self.request_tpot is not None:  # vLLM: the decode time over the tokens after the first
            later_tokens = finished.output_tokens - 1
            self.request_tpot.observe(decode_seconds / later_tokens if later_tokens > 0 else 0.0)
        self.request_prompt_tokens.observe(finished.prompt_tokens)
        self.request_generation_tokens.observe(finished.output_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
