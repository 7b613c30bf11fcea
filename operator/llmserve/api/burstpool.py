"""The BurstPool custom resource: a cluster-scoped account of rented GPUs, with money caps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmserve.api.base import ApiModel, Condition
from llmserve.api.llmserve import ObjectMeta as _NamespacedMeta
from llmserve.api.llmserve import Rule

KIND = "BurstPool"
PLURAL = "burstpools"
SINGULAR = "burstpool"
SHORT_NAMES = ["bp"]

DEFAULT_PROVISIONING_TIMEOUT_SECONDS = 900  # cluster-autoscaler's max-node-provision-time default
DEFAULT_CREDENTIALS_KEY = "apiKey"


class CredentialsSecretRef(ApiModel):
    """A key inside a Secret in the operator's namespace (never in a tenant's namespace)."""

    name: str = Field(
        min_length=1, max_length=253, description="Name of the Secret in the operator's namespace."
    )
    key: str = Field(
        default=DEFAULT_CREDENTIALS_KEY, min_length=1, max_length=253, description="Key inside the Secret."
    )


class GpuPreference(ApiModel):
    """One acceptable GPU shape for a burst replica, with the highest price paid for it."""

    gpu_type: str = Field(
        min_length=1,
        max_length=128,
        description="The provider's GPU type name, e.g. 'NVIDIA H100 80GB HBM3' (RunPod) or 'H100_SXM' (Vast.ai).",
    )
    gpus_per_replica: int = Field(default=1, ge=1, le=16, description="GPUs one burst replica rents.")
    max_usd_per_hour: float = Field(
        gt=0,
        le=1000,
        description="Highest price in USD/hour for one whole replica (all its GPUs). Offers above it are never "
        "taken, and an instance whose price rises above it is drained.",
    )


class LabelSelectorRequirement(ApiModel):
    """One matchExpressions entry of a Kubernetes label selector."""

    key: str = Field(min_length=1, max_length=317, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(default_factory=list, max_length=64, description="Values for In and NotIn.")


class LabelSelector(ApiModel):
    """A Kubernetes label selector; {} selects every namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels a namespace must carry.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Set-based requirements a namespace must meet."
    )


class StaticEndpoint(ApiModel):
    """A pre-provisioned OpenAI-compatible endpoint a platform team already pays for (provider static)."""

    url: str = Field(pattern=r"^https?://", max_length=2048, description="Base URL of the endpoint.")
    usd_per_hour: float = Field(
        default=0, ge=0, le=1000, description="What the endpoint costs, for the ledger."
    )
    gpu_type: str = Field(
        default="static", min_length=1, max_length=128, description="GPU type, for display."
    )


class BurstPoolSpec(ApiModel):
    """Desired state of a BurstPool."""

    provider: Literal["runpod", "vastai", "static"] = Field(
        description="Which provider rents the GPUs: runpod (REST v2), vastai, or static endpoints."
    )
    credentials_secret: CredentialsSecretRef | None = Field(
        default=None,
        description="Secret (in the operator's namespace) with the provider API key; required for runpod and vastai.",
    )
    gpu_preferences: list[GpuPreference] = Field(
        default_factory=list,
        max_length=16,
        description="Acceptable GPU shapes in order of preference: offers of the first shape are tried cheapest "
        "first, then the next shape's; a capacity error moves on to the next offer.",
    )
    regions: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Regions or data centers to rent in (provider names, e.g. US-KS-2); empty allows any.",
    )
    cloud_type: Literal["SECURE", "COMMUNITY"] | None = Field(
        default=None,
        description="RunPod only: SECURE (data-center) or COMMUNITY machines. Defaults to the provider's.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Engine image for rented replicas. Defaults to the LLMServe's engine image.",
    )
    static_endpoints: list[StaticEndpoint] = Field(
        default_factory=list,
        max_length=256,
        description="The endpoints of a static pool (provider static only).",
    )
    max_instances: int = Field(default=4, ge=0, le=1000, description="Most instances the pool runs at once.")
    max_hourly_spend: float = Field(
        gt=0,
        le=100000,
        description="USD/hour cap on everything the pool runs: no create whose price would lift the burn rate above "
        "it, and a price rise above it drains the most expensive instance.",
    )
    monthly_budget: float = Field(
        gt=0,
        le=10000000,
        description="USD cap per calendar month (UTC). Creates stop, and instances are drained, before the month's "
        "spend would pass it.",
    )
    provisioning_timeout_seconds: int = Field(
        default=DEFAULT_PROVISIONING_TIMEOUT_SECONDS,
        ge=60,
        le=86400,
        description="An instance not serving this long after its create is terminated (cluster-autoscaler's "
        "max-node-provision-time).",
    )
    drain_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="How long a drained instance keeps finishing in-flight requests before it is terminated.",
    )
    orphan_grace_seconds: int = Field(
        default=600,
        ge=60,
        le=86400,
        description="An instance carrying this cluster's id that no status records is terminated after this long.",
    )
    allowed_namespaces: LabelSelector = Field(
        description="Namespaces whose LLMServes may spend this pool's money; {} allows every namespace. An "
        "LLMServe in a namespace it does not select gets no burst replicas and a BurstRefused condition."
    )

    @model_validator(mode="after")
    def _rules(self) -> BurstPoolSpec:
        for rule in POOL_RULES:
            if not rule.check(self):
                raise ValueError(f"{rule.field}: {rule.message}")
        return self


POOL_RULES = [
    Rule(
        "self.provider == 'static' || has(self.credentialsSecret)",
        "credentialsSecret is required for provider runpod and vastai",
        ".credentialsSecret",
        lambda s: s.provider == "static" or s.credentials_secret is not None,
    ),
    Rule(
        "self.provider == 'static' || (has(self.gpuPreferences) && size(self.gpuPreferences) > 0)",
        "gpuPreferences needs at least one entry for provider runpod and vastai",
        ".gpuPreferences",
        lambda s: s.provider == "static" or len(s.gpu_preferences) > 0,
    ),
    Rule(
        "self.provider != 'static' || (has(self.staticEndpoints) && size(self.staticEndpoints) > 0)",
        "staticEndpoints needs at least one entry for provider static",
        ".staticEndpoints",
        lambda s: s.provider != "static" or len(s.static_endpoints) > 0,
    ),
    Rule(
        "self.provider == 'static' || !has(self.staticEndpoints) || size(self.staticEndpoints) == 0",
        "staticEndpoints is only for provider static",
        ".staticEndpoints",
        lambda s: s.provider == "static" or len(s.static_endpoints) == 0,
    ),
    Rule(
        "!has(self.cloudType) || self.provider == 'runpod'",
        "cloudType is only for provider runpod",
        ".cloudType",
        lambda s: s.cloud_type is None or s.provider == "runpod",
    ),
    Rule(
        "!has(self.gpuPreferences) || self.gpuPreferences.all(p, p.maxUsdPerHour <= self.maxHourlySpend)",
        "every gpuPreferences[].maxUsdPerHour must be at most maxHourlySpend, or the offer could never be taken",
        ".gpuPreferences",
        lambda s: all(p.max_usd_per_hour <= s.max_hourly_spend for p in s.gpu_preferences),
    ),
]


class InstanceStatus(ApiModel):
    """One rented instance, recorded before its create call and kept until the provider says it is gone."""

    name: str = Field(description="Deterministic instance name (llms-<cluster>-<owner hash>-<slot>).")
    id: str | None = Field(
        default=None, description="Provider instance id; absent while the create is unconfirmed."
    )
    owner: str = Field(description="The LLMServe it serves, as <namespace>/<name>.")
    slot: int = Field(ge=0, description="The owner's burst slot number (never reused).")
    phase: str = Field(
        description="Requested (intent recorded, create unconfirmed), then the provider's phase: Provisioning, "
        "Starting, Running, Exited, Failed, Unknown."
    )
    gpu_type: str = Field(default="", description="GPU type rented.")
    gpus: int = Field(default=0, ge=0, description="GPUs rented.")
    offer_id: str = Field(default="", description="Provider offer the create used.")
    usd_per_hour: float = Field(default=0, ge=0, description="Live price in USD/hour.")
    max_usd_per_hour: float = Field(
        default=0, ge=0, description="The preference's price cap when it was created."
    )
    price_seen: str | None = Field(
        default=None,
        description="When the provider last confirmed usdPerHour (RFC 3339); a rise is billed from here.",
    )
    endpoint: str | None = Field(default=None, description="Base URL once reachable.")
    created: str = Field(description="When the intent was recorded (RFC 3339).")
    ready_since: str | None = Field(default=None, description="When it first served (RFC 3339).")
    draining_since: str | None = Field(default=None, description="When draining began (RFC 3339).")
    terminating_since: str | None = Field(
        default=None, description="When termination was decided (RFC 3339)."
    )
    reason: str | None = Field(default=None, description="Why it is draining or terminating.")


class ModelBurstStatus(ApiModel):
    """Per-LLMServe bookkeeping the controller keeps across restarts."""

    owner: str = Field(description="The LLMServe, as <namespace>/<name>.")
    next_slot: int = Field(default=0, ge=0, description="The next slot number (names are never reused).")
    local_ready_seen: int = Field(default=0, ge=0, description="Ready local replicas at the last decision.")
    scale_in_since: str | None = Field(
        default=None, description="Since when fewer burst replicas were wanted than existed (RFC 3339)."
    )
    spent_this_month_usd: float = Field(
        default=0, ge=0, description="This model's rented spend this month (USD)."
    )


class BurstPoolStatus(ApiModel):
    """Observed state of a BurstPool: its instances and its money."""

    instances: list[InstanceStatus] = Field(
        default_factory=list, description="Every instance the pool may be paying for."
    )
    models: list[ModelBurstStatus] = Field(
        default_factory=list, description="Per-LLMServe burst bookkeeping."
    )
    instance_count: int = Field(default=0, ge=0, description="Instances recorded (any phase).")
    ready_instances: int = Field(default=0, ge=0, description="Instances serving.")
    burn_rate_usd_per_hour: float = Field(default=0, ge=0, description="USD/hour of everything running now.")
    spent_this_month_usd: float = Field(default=0, ge=0, description="USD spent in the current UTC month.")
    spend_month: str | None = Field(default=None, description="The UTC month the spend is for (YYYY-MM).")
    spend_updated: str | None = Field(
        default=None, description="Spend is integrated up to this time (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="CredentialsValid, ProviderReachable, BudgetAvailable, Ready."
    )


class ClusterObjectMeta(_NamespacedMeta):
    """Metadata of a cluster-scoped object (no namespace)."""

    namespace: str = Field(default="", description="Always empty: BurstPools are cluster-scoped.")


class BurstPool(ApiModel):
    """A cluster-scoped pool of rented GPUs (RunPod, Vast.ai or static endpoints) that LLMServes burst into."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["llmserve.dev/v1alpha1"] = Field(
        default="llmserve.dev/v1alpha1", description="API version."
    )
    kind: Literal["BurstPool"] = Field(default="BurstPool", description="Kind.")
    metadata: ClusterObjectMeta = Field(description="Standard object metadata.")
    spec: BurstPoolSpec = Field(description="Desired state.")
    status: BurstPoolStatus | None = Field(default=None, description="Observed state.")
