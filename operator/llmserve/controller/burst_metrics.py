"""Prometheus metrics of the burst controller: instances, money, provider errors, time to serving."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from llmserve.api.burstpool import BurstPoolStatus

INSTANCES = Gauge(
    "llmserve_burst_instances",
    "Rented instances recorded in a BurstPool's status.",
    ("pool", "provider", "phase"),
)
BURN_RATE = Gauge(
    "llmserve_burst_burn_rate_usd_per_hour", "USD/hour of everything a pool runs.", ("pool", "provider")
)
SPEND = Gauge("llmserve_burst_spend_usd_this_month", "USD a pool spent this UTC month.", ("pool", "provider"))
BUDGET = Gauge("llmserve_burst_monthly_budget_usd", "A pool's monthlyBudget.", ("pool", "provider"))
PROVIDER_ERRORS = Counter(
    "llmserve_burst_provider_errors_total",
    "Failed provider calls, by error kind.",
    ("pool", "provider", "kind"),
)
CREATE_TO_SERVING = Histogram(
    "llmserve_burst_create_to_serving_seconds",
    "Time from recording a create to the instance serving.",
    ("pool", "provider"),
    buckets=(30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800),
)
MODEL_REPLICAS = Gauge(
    "llmserve_burst_model_replicas",
    "Replicas of a model by where they run.",
    ("namespace", "llmserve", "location", "state"),
)
MODEL_SPEND = Gauge(
    "llmserve_burst_model_spend_usd_this_month",
    "USD a model's rented replicas cost this month.",
    ("namespace", "llmserve"),
)

_PHASES = ("Requested", "Provisioning", "Starting", "Running", "Stopping", "Exited", "Failed", "Unknown")


def observe_pool(
    pool: str, provider: str, status: BurstPoolStatus, errors: Iterable[str], serving_seconds: Iterable[float]
) -> None:
    counts = dict.fromkeys(_PHASES, 0)
    for record in status.instances:
        counts[record.phase] = counts.get(record.phase, 0) + 1
    for phase, count in counts.items():
        INSTANCES.labels(pool, provider, phase).set(count)
    BURN_RATE.labels(pool, provider).set(status.burn_rate_usd_per_hour)
    SPEND.labels(pool, provider).set(status.spent_this_month_usd)
    for kind in errors:
        PROVIDER_ERRORS.labels(pool, provider, kind).inc()
    for seconds in serving_seconds:
        CREATE_TO_SERVING.labels(pool, provider).observe(seconds)


def observe_model(
    namespace: str,
    name: str,
    local_desired: int,
    local_ready: int,
    burst_desired: int,
    burst_ready: int,
    spend_usd: float,
) -> None:
    for location, state, value in (
        ("local", "desired", local_desired),
        ("local", "ready", local_ready),
        ("burst", "desired", burst_desired),
        ("burst", "ready", burst_ready),
    ):
        MODEL_REPLICAS.labels(namespace, name, location, state).set(value)
    MODEL_SPEND.labels(namespace, name).set(spend_usd)


def forget_pool(pool: str, provider: str) -> None:
    for phase in _PHASES:
        try:
            INSTANCES.remove(pool, provider, phase)
        except KeyError:
            pass
    for gauge in (BURN_RATE, SPEND, BUDGET):
        try:
            gauge.remove(pool, provider)
        except KeyError:
            pass
