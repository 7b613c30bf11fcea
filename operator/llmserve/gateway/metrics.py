"""The gateway's Prometheus metrics (private registry); key-related series carry the key's name only."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Children", "GatewayMetrics"]

MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)


class Children(Generic[MetricT]):
    """A labelled metric's children, looked up once per label values.

    prometheus_client's `labels()` validates, locks and builds its key on every call (~3 µs); the
    request path asks for eight children per request. The gateway never removes a child, so the one
    cached here is always the one the metric exports.
    """

    def __init__(self, metric: MetricT) -> None:
        self.metric: MetricT = metric
        self._by_values: dict[tuple[str, ...], MetricT] = {}

    def __call__(self, *values: str) -> MetricT:
        child = self._by_values.get(values)
        if child is None:
            child = self._by_values[values] = self.metric.labels(*values)
        return child


LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0,
)  # fmt: skip
HOLD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)


class GatewayMetrics:
    """One instance per gateway process; tests build their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmserve_gateway_requests",
            "Requests answered, by served model, API key name and HTTP status.",
            ["model", "key", "status"],
            registry=r,
        )
        self.errors = Counter(
            "llmserve_gateway_errors",
            "Requests that failed or were refused, by reason "
            "(unauthorized, forbidden, unknown_model, bad_request, body_too_large, rate_limited, "
            "model_scaling_up, replicas_busy, upstream_unavailable, upstream_timeout, upstream_broken_body, "
            "upstream_broken_stream, client_disconnected).",
            ["model", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "llmserve_gateway_upstream_retries",
            "Requests moved to another backend before the first byte, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "llmserve_gateway_request_duration_seconds",
            "Time from request received to the last byte sent, including any hold.",
            ["model", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmserve_gateway_time_to_first_token_seconds",
            "Time from request received to the first streamed chunk sent to the client.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.hold_seconds = Histogram(
            "llmserve_gateway_hold_duration_seconds",
            "How long requests waited for a model with no ready replica.",
            ["model"],
            buckets=HOLD_BUCKETS,
            registry=r,
        )
        # The autoscaler can read this as a signal: it counts held requests too, so it is non-zero
        # while a model is scaled to zero and has callers waiting.
        self.model_in_flight = Gauge(
            "llmserve_gateway_in_flight_requests",
            "Requests in flight per served model (held ones included), with the LLMServe it maps to.",
            ["model", "namespace", "llmserve"],
            registry=r,
        )
        self.backend_in_flight = Gauge(
            "llmserve_gateway_backend_in_flight_requests",
            "Requests in flight per backend.",
            ["model", "backend"],
            registry=r,
        )
        self.held = Gauge(
            "llmserve_gateway_held_requests",
            "Requests waiting for a replica of a model scaled to zero, with the LLMServe it maps to "
            "(the operator's autoscaler counts them as waiting).",
            ["model", "namespace", "llmserve"],
            registry=r,
        )
        self.backends = Gauge(
            "llmserve_gateway_backends",
            "Ready backends per served model.",
            ["model"],
            registry=r,
        )
        self.tokens = Counter(
            "llmserve_gateway_tokens",
            "Tokens served, from the responses' usage, by API key name, model and kind (prompt|completion).",
            ["key", "model", "kind"],
            registry=r,
        )
        self.rate_limited = Counter(
            "llmserve_gateway_rate_limited",
            "Requests refused with 429, by API key name and limit.",
            ["key", "limit"],
            registry=r,
        )
        self.scale_ups = Counter(
            "llmserve_gateway_scale_from_zero",
            "Scale-ups to one replica requested by the gateway for held requests.",
            ["namespace", "llmserve"],
            registry=r,
        )
        self.engine_key_fallbacks = Counter(
            "llmserve_gateway_engine_key_fallbacks",
            "Requests an engine refused with the current engine key and took with the previous one "
            "(engine-key master rotation, until the engine's pod has rolled).",
            registry=r,
        )
        # Routing (see docs/gateway.md#routing).
        self.routed = Counter(
            "llmserve_gateway_routing_decisions",
            "Backend choices by outcome: placed (a free slot), affine (the prompt prefix's replica), "
            "on_full (a full replica while another had room; only the power-of-two router does this), "
            "all_full (every replica full: the engine queues it).",
            ["model", "outcome"],
            registry=r,
        )
        self.queue_refused = Counter(
            "llmserve_gateway_queue_refused_requests",
            "Requests the gateway queue answered with 503 replicas_busy (queue full, waited past "
            "--queue-timeout, or displaced by a newer request that could still meet the TTFT target), with "
            "the LLMServe it maps to: requests that reached no engine.",
            ["model", "namespace", "llmserve"],
            registry=r,
        )
        self.queued = Gauge(
            "llmserve_gateway_queued_requests",
            "Requests waiting in the gateway for a free batch slot (every replica full), with the LLMServe "
            "it maps to (the operator's autoscaler counts them as waiting).",
            ["model", "namespace", "llmserve"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "llmserve_gateway_queue_duration_seconds",
            "How long requests waited in the gateway for a free batch slot.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )

        # The request path's children, cached (see Children); other code may still use .labels().
        self.requests_of = Children(self.requests)
        self.errors_of = Children(self.errors)
        self.retries_of = Children(self.retries)
        self.latency_of = Children(self.latency)
        self.ttft_of = Children(self.ttft)
        self.model_in_flight_of = Children(self.model_in_flight)
        self.backend_in_flight_of = Children(self.backend_in_flight)
        self.tokens_of = Children(self.tokens)
        self.routed_of = Children(self.routed)

    def render(self) -> bytes:
        return generate_latest(self.registry)
