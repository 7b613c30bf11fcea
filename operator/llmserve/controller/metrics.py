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
