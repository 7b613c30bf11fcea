"""Prometheus metrics the operator exports, labelled by LLMServe."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from llmserve.api.llmserve import LLMServeStatus

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
