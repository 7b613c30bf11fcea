"""The settings each llmserve process builds once at start-up from its flags and environment variables
(pydantic-settings); docs/configuration.md is their table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NAMESPACE_ENV = "POD_NAMESPACE"  # the chart sets it from the pod's metadata.namespace
NAMESPACE_ENV_FALLBACK = "LLMSERVE_OPERATOR_NAMESPACE"  # the burst controller's older name, still read


def pod_namespace(env: Mapping[str, str] | None = None) -> str:
    """The namespace this process runs in (the operator's: engine-key master, Lease, burst Secrets):
    $POD_NAMESPACE, else $LLMSERVE_OPERATOR_NAMESPACE, else the service account's, else `default`."""
    env = os.environ if env is None else env
    for name in (NAMESPACE_ENV, NAMESPACE_ENV_FALLBACK):
        if env.get(name):
            return env[name]
    if IN_CLUSTER_NAMESPACE_FILE.exists():
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    return "default"


class OperatorSettings(BaseSettings):
    """`llmserve operator`: flags (namespaces, ports, verbose, leader election) and LLMSERVE_* variables."""

    model_config = SettingsConfigDict(env_prefix="LLMSERVE_", extra="ignore", frozen=True)

    # -- flags --------------------------------------------------------------------------------------
    namespaces: tuple[str, ...] = Field(default=(), exclude=True, description="--namespace: watch only these")
    liveness_port: int = Field(default=8080, ge=0, le=65535, description="--liveness-port; 0 = none")
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="--metrics-port; 0 = none")
    verbose: bool = Field(default=False, description="--verbose: DEBUG logs")
    leader_election: bool = Field(default=True, description="off with --no-leader-election")
    # -- environment --------------------------------------------------------------------------------
    namespace: str = Field(
        default_factory=lambda: pod_namespace({}),
        validation_alias=AliasChoices(NAMESPACE_ENV, NAMESPACE_ENV_FALLBACK),
        description="the operator's namespace",
    )
    metrics_addr: str = "0.0.0.0"
    liveness_addr: str = "0.0.0.0"
    watch_timeout_seconds: int = Field(default=300, ge=1)
    batch_idle_seconds: float = Field(default=1.0, gt=0)
    kube_max_in_flight: int = Field(default=16, ge=1)
    autoscaler_metrics_source: Literal["direct", "prometheus"] = "direct"
    prometheus_url: str = ""
    autoscaler_scrape_timeout_seconds: float = Field(default=1.0, gt=0)
    cost_interval_seconds: float = Field(default=60.0, gt=0)
    cost_max_gap_seconds: float = Field(default=900.0, gt=0)
    burst_interval_seconds: float = Field(default=10.0, gt=0)
    cluster_id: str = ""
    lease_name: str = "llmserve-operator"
    lease_namespace: str = ""
    lease_duration_seconds: int = Field(default=15, ge=1)
    lease_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    lease_retry_period_seconds: float = Field(default=2.0, gt=0)


class GatewayEnvironment(BaseSettings):
    """What `llmserve gateway` reads from its environment; its flags (docs/gateway.md) default from it."""

    model_config = SettingsConfigDict(env_prefix="LLMSERVE_", extra="ignore", frozen=True)

    namespace: str = Field(
        default_factory=lambda: pod_namespace({}),
        validation_alias=AliasChoices(NAMESPACE_ENV, NAMESPACE_ENV_FALLBACK),
        description="default of --keys-namespace and --burst-namespace",
    )
    engine_key_secret: str = Field(default="", description="default of --engine-key-secret")
    kube_max_in_flight: int = Field(default=16, ge=1)


_operator: OperatorSettings | None = None


def install(settings: OperatorSettings) -> OperatorSettings:
    """Makes `settings` the operator's, before its handler modules are imported."""
    global _operator
    _operator = settings
    return settings


def operator_settings() -> OperatorSettings:
    """The operator's settings: those installed at start-up, else read from the environment once (unit
    tests and benchmarks that call handlers without `llmserve operator`)."""
    global _operator
    if _operator is None:
        _operator = OperatorSettings()
    return _operator
