"""The vLLM metric names llmserve reads and the simulator exports, and which vLLM releases export each.

One place for the names: the autoscaler (autoscale/collect.py), the gateway's load scrape
(gateway/scrape.py), the cost meter (cost/counters.py) and the simulator (sim/metrics.py) import them
from here. Checked against the release wheels' `vllm/v1/metrics/loggers.py` (`PrometheusStatLogger`):
0.10.1.1, 0.10.2, 0.11.0, 0.12.0 and 0.33.0, the newest release (tests/data/vllm-*-metrics.txt are those
releases' default /metrics pages, recorded by hack/vllm_metrics_payload.py; docs/simulator.md has the
table for people).

vLLM renames a metric in three steps: the new name is added next to the old one (old one "deprecated"),
the old one is hidden the next minor release (shown again only with
`--show-hidden-metrics-for-version=<previous minor>`), then removed. Where a name llmserve reads was
renamed, the readers take the newer name and fall back to the older one only when the newer one is
absent, so engines from before the rename keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

# The newest vLLM release checked; the default engine image is vllm/vllm-openai:v<this>.
VLLM_VERSION = "0.33.0"
# The oldest release whose wheel was checked (older ones are supported through the fallbacks below,
# whose names were the only ones before the renames).
OLDEST_CHECKED_VLLM_VERSION = "0.10.1.1"

# Scheduler gauges (the autoscaler's and the gateway's load signals).
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_CACHE = "vllm:kv_cache_usage_perc"
KV_CACHE_LEGACY = "vllm:gpu_cache_usage_perc"  # the only name before 0.9.2; hidden in 0.11, gone in 0.12
WAITING_BY_REASON = "vllm:num_requests_waiting_by_reason"  # newer than 0.12.0: reason=capacity|deferred
# Counters (names without the _total suffix prometheus_client adds to the sample).
FINISHED = "vllm:request_success"  # label finished_reason
PROMPT_TOKENS = "vllm:prompt_tokens"
GENERATION_TOKENS = "vllm:generation_tokens"
PREEMPTIONS = "vllm:num_preemptions"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"
PROMPT_TOKENS_CACHED = "vllm:prompt_tokens_cached"  # newer than 0.12.0
# Histograms.
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
ITL_LEGACY = "vllm:time_per_output_token_seconds"  # the only per-token name before 0.10.2; hidden 0.12
REQUEST_TPOT = "vllm:request_time_per_output_token_seconds"  # one observation per request
QUEUE_TIME = "vllm:request_queue_time_seconds"
E2E_LATENCY = "vllm:e2e_request_latency_seconds"
INFERENCE_TIME = "vllm:request_inference_time_seconds"
PREFILL_TIME = "vllm:request_prefill_time_seconds"
DECODE_TIME = "vllm:request_decode_time_seconds"
REQUEST_PROMPT_TOKENS = "vllm:request_prompt_tokens"
REQUEST_GENERATION_TOKENS = "vllm:request_generation_tokens"
ITERATION_TOKENS = "vllm:iteration_tokens_total"  # a histogram despite its name
# Info gauge fixed at 1 whose labels describe the KV cache.
CACHE_CONFIG_INFO = "vllm:cache_config_info"

# Label values vLLM pre-creates (at 0) for request_success and num_requests_waiting_by_reason.
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")  # error, repetition: after 0.12.0
WAITING_REASONS = ("capacity", "deferred")


@dataclass(frozen=True)
class Rename:
    """An older name llmserve still reads, and the releases that export it on a default `vllm serve`."""

    old: str
    new: str
    old_default_until: str  # the last release checked that exports the old name by default
    hidden_in: str  # from this release on, only with --show-hidden-metrics-for-version
    new_since: str  # the first release that exports the new name


RENAMES = (
    Rename(KV_CACHE_LEGACY, KV_CACHE, old_default_until="0.10.2", hidden_in="0.11.0", new_since="0.9.2"),
    Rename(ITL_LEGACY, ITL, old_default_until="0.11.0", hidden_in="0.12.0", new_since="0.10.2"),
)


def version_tuple(version: str) -> tuple[int, ...]:
    """`0.11.0` -> (0, 11, 0); ValueError naming the text when it is not dotted numbers."""
    try:
        return tuple(int(part) for part in version.removeprefix("v").split("."))
    except ValueError:
        raise ValueError(f"not a vLLM release number (like 0.33.0): {version!r}") from None


def legacy_names_exported_by(version: str) -> frozenset[str]:
    """The renamed-away names a default `vllm serve` of this release exports (for the simulator)."""
    release = version_tuple(version)
    return frozenset(r.old for r in RENAMES if release < version_tuple(r.hidden_in))


def new_names_missing_from(version: str) -> frozenset[str]:
    """The newer names a release from before a rename lacks (only the old name existed then)."""
    release = version_tuple(version)
    return frozenset(r.new for r in RENAMES if release < version_tuple(r.new_since))
