"""The gateway's one settings object: its flags and environment variables, read and checked once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, field_validator

from llmserve.gateway.routing import DEFAULT_BATCH_SLOTS, DEFAULT_LOAD_FACTOR, Policy
from llmserve.render.engine_key import SecretRef, master_secret_ref
from llmserve.settings import (
    NAMESPACE_ENV,
    NAMESPACE_ENV_FALLBACK,
    ProcessSettings,
    burst_overrides_field,
    flag,
    pod_namespace,
    variable,
)

DEFAULT_METRICS_PORT = 9091
NO_ENGINE_KEY = "none"  # --engine-key-secret none: send engines no key
NO_BURST = "-"  # --burst-namespace -: no burst backends


class GatewaySettings(ProcessSettings):
    """`llmserve gateway`: built by llmserve.gateway.cli from its flags (a flag wins over its variable)."""

    PROGRAM: ClassVar[str] = "llmserve gateway"

    # -- listening ----------------------------------------------------------------------------------
    host: str = flag("--host", "127.0.0.1", "address to listen on")
    port: int = flag("--port", 8080, "port of the OpenAI API", ge=0, le=65535)
    metrics_port: int = flag(
        "--metrics-port", DEFAULT_METRICS_PORT,
        "port of `/metrics`, apart from the API; 0 serves `/metrics` on the API port, where any caller sees "
        "key names, models and backends", ge=0, le=65535,
    )  # fmt: skip
    metrics_host: str = flag("--metrics-host", "127.0.0.1", "address of `--metrics-port`")
    # -- where models, backends and keys come from --------------------------------------------------
    static: Path | None = flag("--static", None, "YAML/JSON file of models, backends and keys; without it, "
                               "Kubernetes discovery", metavar="FILE")  # fmt: skip
    kubernetes: bool = flag("--kubernetes", False, "with `--static`: also discover from Kubernetes")
    namespaces: tuple[str, ...] = flag("--namespace", (), "serve LLMServes of these namespaces only (repeatable)", metavar="NAMESPACE",
                                       doc_default="all namespaces")  # fmt: skip
    keys_namespace: str = flag("--keys-namespace", "", "namespace of the API-key Secrets",
                               doc_default="the gateway's namespace")  # fmt: skip
    key_secret: tuple[str, ...] = flag(
        "--key-secret", (), "read only these API-key Secrets of `--keys-namespace`, by name (repeatable; RBAC "
        "can then grant just them)", doc_default="every Secret labelled `llmserve.dev/api-key`", metavar="NAME",
    )  # fmt: skip
    engine_key_secret: str = flag(
        "--engine-key-secret", "", "the operator's engine-key master Secret (`namespace/name` or a name), from "
        "which each engine's key is derived; `none` sends no engine key", env=True,
        doc_default="`<namespace>/llmserve-engine-key-master`", metavar="NAMESPACE/NAME",
    )  # fmt: skip
    burst_namespace: str = flag(
        "--burst-namespace", "", "namespace of the burst instance Secrets, the operator's; `-` turns burst "
        "backends off", doc_default="`--keys-namespace`",
    )  # fmt: skip
    insecure_no_auth: bool = flag("--insecure-no-auth", False,
                                  "accept requests without an API key even when listening beyond loopback")  # fmt: skip
    # -- client side limits -------------------------------------------------------------------------
    max_body_bytes: int = flag("--max-body-bytes", 8 * 1024 * 1024, "largest request body (413 above)", ge=1)
    header_timeout: float = flag("--header-timeout", 15.0,
                                 "seconds a connection may take to send a request head, or stay idle", gt=0)  # fmt: skip
    body_timeout: float = flag("--body-timeout", 30.0, "seconds a request body may take to arrive; 408 after",
                               gt=0)  # fmt: skip
    max_connections: int = flag("--max-connections", 4096,
                                "concurrent client connections; more are answered 503", ge=1)  # fmt: skip
    # -- upstream -----------------------------------------------------------------------------------
    connect_timeout: float = flag("--connect-timeout", 3.0, "seconds to connect to a replica", gt=0)
    read_timeout: float = flag("--read-timeout", 600.0, "longest silence from a replica, incl. waiting for an "
                               "unstreamed answer", gt=0)  # fmt: skip
    request_timeout: float = flag("--request-timeout", 0.0, "whole upstream exchange; 0 = no limit", ge=0)
    stream_idle_timeout: float = flag(
        "--stream-idle-timeout", 120.0, "longest silence inside a started stream before it is cut and the "
        "replica ejected; 0 = `--read-timeout`", ge=0,
    )  # fmt: skip
    max_attempts: int = flag("--max-attempts", 3, "replicas tried before the first byte", ge=1)
    scrape_interval: float = flag("--scrape-interval", 1.0, "seconds between engine `/metrics` scrapes", gt=0)
    # -- routing, holding, queueing -----------------------------------------------------------------
    routing: Policy = flag("--routing", Policy.PREFIX, "`prefix` (affinity with bounded load, else least "
                           "load), `least-load`, or `power-of-two` (the original router, for comparison)")  # fmt: skip
    default_batch_slots: int = flag("--default-batch-slots", DEFAULT_BATCH_SLOTS,
                                    "a replica's batch slots when its `--max-num-seqs` is unknown", ge=1)  # fmt: skip
    prefix_load_factor: float = flag(
        "--prefix-load-factor", DEFAULT_LOAD_FACTOR,
        "prefix affinity yields once a replica holds more than this x its share of the load", gt=0,
    )  # fmt: skip
    hold_timeout: float = flag("--hold-timeout", 180.0, "seconds a request waits for a model scaled to zero",
                               ge=0)  # fmt: skip
    hold_queue: int = flag("--hold-queue", 256, "held requests per model before 503", ge=0)
    queue_when_full: bool = flag(
        "--queue-when-full", False, "when every replica's batch is full, wait in the gateway for the first "
        "free slot (fair across keys) instead of queueing in one engine", negatable=True,
    )  # fmt: skip
    queue_size: int = flag("--queue-size", 256, "requests queued per model before 503", ge=1)
    queue_timeout: float = flag("--queue-timeout", 60.0, "longest wait for a free slot, then 503", gt=0)
    # -- shutdown, logs -----------------------------------------------------------------------------
    shutdown_delay: float = flag(
        "--shutdown-delay", 0.0, "on SIGTERM, seconds to keep accepting requests (readiness failing) while "
        "the endpoint leaves rotation, before closing the listener (chart: 10)", ge=0,
    )  # fmt: skip
    drain_timeout: float = flag("--drain-timeout", 600.0, "after closing the listener, seconds to wait for "
                                "requests in flight (the longest generation)", ge=0)  # fmt: skip
    no_access_log: bool = flag("--no-access-log", False, "do not log one line per request")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = flag("--log-level", "INFO", "log level")
    # -- environment only ---------------------------------------------------------------------------
    namespace: str = variable(
        default_factory=lambda: pod_namespace({}),
        validation_alias=AliasChoices(NAMESPACE_ENV, NAMESPACE_ENV_FALLBACK),
        description="the gateway's namespace (*chart*): default of `--keys-namespace`, and of the engine-key "
        "Secret's namespace",
        doc_default="see above",
    )
    kube_max_in_flight: int = variable(16, "Kubernetes requests in flight", ge=1)
    burst_providers: dict[str, dict[str, str]] = burst_overrides_field(
        "a CA to trust for a burst provider's TLS proxy (the fake provider's, in tests)",
        "`LLMSERVE_BURST_<PROVIDER>_CA_FILE`",
    )

    @field_validator("engine_key_secret")
    @classmethod
    def _is_a_secret_reference(cls, value: str) -> str:
        if value.strip() != NO_ENGINE_KEY:
            master_secret_ref(value, "default")  # raises ValueError saying what would be valid
        return value.strip()

    @property
    def api_keys_namespace(self) -> str:
        return self.keys_namespace or self.namespace

    @property
    def engine_key_ref(self) -> SecretRef | None:
        """The engine-key master Secret; None with `--engine-key-secret none`."""
        if self.engine_key_secret == NO_ENGINE_KEY:
            return None
        return master_secret_ref(self.engine_key_secret, self.namespace)

    @property
    def burst_secrets_namespace(self) -> str | None:
        """Where the burst instance Secrets are; None with `--burst-namespace -`."""
        if self.burst_namespace == NO_BURST:
            return None
        return self.burst_namespace or self.api_keys_namespace
