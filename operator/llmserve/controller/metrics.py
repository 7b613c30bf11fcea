"""Prometheus metrics the operator exports, labelled by LLMServe."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from llmserve.api.llmserve import LLMServeStatus
from llmserve.autoscale.policy import Signals

_LABELS = ("namespace", "llmserve")

RECONCILE_SECONDS = Histogram(
    "llmserve_reconcile_duration_seconds", "Time to apply an LLMServe's children.", _LABELS
)
RECONCILE_ERRORS = Counter("llmserve_reconcile_errors_total", "Failed reconciles.", _LABELS)
DESIRED_REPLICAS = Gauge("llmserve_desired_replicas", "Replicas asked for.", _LABELS)
CURRENT_REPLICAS = Gauge("llmserve_current_replicas", "Replicas that exist.", _LABELS)
READY_REPLICAS = Gauge("llmserve_ready_replicas", "Replicas passing readiness.", _LABELS)
UNSCHEDULABLE_REPLICAS = Gauge(
    "llmserve_unschedulable_replicas", "Replicas Pending for lack of capacity.", _LABELS
)

LEADER = Gauge(
    "llmserve_operator_leader", "1 while this operator process holds the Lease and acts; 0 on standby."
)


def observe_status(key: tuple[str, str], status: LLMServeStatus) -> None:
    labels = {"namespace": key[0], "llmserve": key[1]}
    DESIRED_REPLICAS.labels(**labels).set(status.desired_replicas)
    CURRENT_REPLICAS.labels(**labels).set(status.replicas)
    READY_REPLICAS.labels(**labels).set(status.ready_replicas)
    UNSCHEDULABLE_REPLICAS.labels(**labels).set(status.unschedulable_replicas)


def forget(key: tuple[str, str]) -> None:
    for gauge in (DESIRED_REPLICAS, CURRENT_REPLICAS, READY_REPLICAS, UNSCHEDULABLE_REPLICAS):
        try:
            gauge.remove(*key)
        except KeyError:
            pass


# -- autoscaler ---------------------------------------------------------------------------------------

AUTOSCALER_QUEUE_DEPTH = Gauge(
    "llmserve_autoscaler_queue_depth_per_replica", "Waiting requests per ready or starting replica.", _LABELS
)
AUTOSCALER_KV_CACHE = Gauge(
    "llmserve_autoscaler_kv_cache_utilization", "Mean KV-cache use (0-1) of the scraped replicas.", _LABELS
)
AUTOSCALER_RUNNING = Gauge(
    "llmserve_autoscaler_running_requests_per_replica", "Requests in the running batch per replica.", _LABELS
)
AUTOSCALER_LOAD_RATIO = Gauge(
    "llmserve_autoscaler_load_ratio", "Strongest signal over its target (1 = on target).", _LABELS
)
AUTOSCALER_RECOMMENDED = Gauge(
    "llmserve_autoscaler_recommended_replicas", "The load's recommendation before step and window.", _LABELS
)
AUTOSCALER_GATEWAY_WAITING = Gauge(
    "llmserve_autoscaler_gateway_waiting_requests",
    "Requests held or queued in the gateway for this LLMServe, as the autoscaler last read them.",
    _LABELS,
)
AUTOSCALER_RESCALES = Counter(
    "llmserve_autoscaler_rescales_total", "Rescales written by the autoscaler.", (*_LABELS, "direction")
)
AUTOSCALER_SCRAPE_ERRORS = Counter(
    "llmserve_autoscaler_scrape_errors_total", "Replica metrics that could not be read.", _LABELS
)
AUTOSCALER_DECISION_SECONDS = Histogram(
    "llmserve_autoscaler_decision_duration_seconds", "Time to collect signals and decide.", _LABELS
)
_AUTOSCALER_GAUGES = (
    AUTOSCALER_QUEUE_DEPTH, AUTOSCALER_KV_CACHE, AUTOSCALER_RUNNING, AUTOSCALER_LOAD_RATIO, AUTOSCALER_RECOMMENDED,
    AUTOSCALER_GATEWAY_WAITING,
)  # fmt: skip


def observe_autoscaler(key: tuple[str, str], signals: Signals, recommended_replicas: int) -> None:
    labels = {"namespace": key[0], "llmserve": key[1]}
    for gauge, value in (
        (AUTOSCALER_QUEUE_DEPTH, signals.queue_depth_per_replica),
        (AUTOSCALER_KV_CACHE, signals.kv_cache_fraction),
        (AUTOSCALER_RUNNING, signals.running_per_replica),
        (AUTOSCALER_LOAD_RATIO, signals.load_ratio),
    ):
        if value is not None:
            gauge.labels(**labels).set(value)
    AUTOSCALER_RECOMMENDED.labels(**labels).set(recommended_replicas)


def forget_autoscaler(key: tuple[str, str]) -> None:
    for metric in (*_AUTOSCALER_GAUGES, AUTOSCALER_SCRAPE_ERRORS, AUTOSCALER_DECISION_SECONDS):
        try:
            metric.remove(*key)
        except KeyError:
            pass
    for direction in ("up", "down"):
        try:
            AUTOSCALER_RESCALES.remove(*key, direction)
        except KeyError:
            pass


# -- capacity fit and cost (controller/capacityfit.py, controller/cost.py) -----------------------------

CAPACITY_FIT_FULL_SEQUENCES = Gauge(
    "llmserve_capacity_fit_full_context_sequences",
    "Sequences of --max-model-len tokens one replica's KV cache holds at once (0: the model or context does not fit).",
    _LABELS,
)
CAPACITY_FIT_BATCH_SLOTS = Gauge(
    "llmserve_capacity_fit_batch_slots", "--max-num-seqs the fit check compared them with.", _LABELS
)
_COST_LABELS = (*_LABELS, "source")  # source: local (owned GPUs) or rented (burst instances)
COST_GPU_HOURS = Gauge(
    "llmserve_cost_gpu_hours", "GPU-hours held this calendar month (UTC), by source.", _COST_LABELS
)
COST_USD = Gauge("llmserve_cost_usd", "Dollars spent this calendar month (UTC), by source.", _COST_LABELS)
COST_OUTPUT_TOKENS = Gauge(
    "llmserve_cost_output_tokens", "Output tokens the engines produced this calendar month (UTC).", _LABELS
)
COST_USD_PER_MILLION_OUTPUT_TOKENS = Gauge(
    "llmserve_cost_usd_per_million_output_tokens",
    "This month's dollars (local + rented) over its output tokens, per million.",
    _LABELS,
)
COST_GPU_PRICE = Gauge(
    "llmserve_cost_local_usd_per_gpu_hour",
    "The platform's price of one local GPU-hour, by nvidia.com/gpu.product.",
    ("gpu_product",),
)


def forget_cost(key: tuple[str, str]) -> None:
    for metric in (CAPACITY_FIT_FULL_SEQUENCES, CAPACITY_FIT_BATCH_SLOTS, COST_OUTPUT_TOKENS,
                   COST_USD_PER_MILLION_OUTPUT_TOKENS):  # fmt: skip
        try:
            metric.remove(*key)
        except KeyError:
            pass
    for source in ("local", "rented"):
        for metric in (COST_GPU_HOURS, COST_USD):
            try:
                metric.remove(*key, source)
            except KeyError:
                pass


# -- the operator's own cost (bench/reconcile.py reads these) ------------------------------------------

STATUS_WRITES = Counter(
    "llmserve_operator_status_writes_total",
    "Server-side applies of LLMServe status sent, by field manager (each is an apiserver write and a watch event).",
    ("manager",),
)
