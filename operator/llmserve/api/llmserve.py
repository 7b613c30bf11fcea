"""The LLMServe custom resource: one served, autoscaled, OpenAI-compatible model."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from llmserve.api.base import ApiModel, Condition

GROUP = "llmserve.dev"
VERSION = "v1alpha1"
KIND = "LLMServe"
PLURAL = "llmserves"
SINGULAR = "llmserve"
SHORT_NAMES = ["llms"]

ENGINE_PORT = 8000
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.33.0"  # engine_metrics_names.VLLM_VERSION
# The release image (operator, gateway and simulator in one); hack/release.py keeps its tag in step.
DEFAULT_SIMULATOR_IMAGE = "ghcr.io/llmserve/llmserve:0.1.0"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Names Kubernetes checks later (Secret, PersistentVolumeClaim: DNS subdomains), checked at apply time.
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
_LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
# A container image reference: [registry[:port]/]path[:tag][@digest], as the container runtime parses it.
_IMAGE = (
    r"^([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?"
    r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
SHM_MOUNT_PATH = "/dev/shm"
# Paths the model cache may not be mounted at: the shared-memory volume (or inside it), /dev and /.
_RESERVED_MOUNT = r"^(/+|/dev/*|/dev/+shm(/.*)?)$"
_QUANTITY = r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class SecretKeyRef(ApiModel):
    """A key inside a Secret in the LLMServe's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
        description="Name of the Secret (a DNS subdomain).",
    )
    key: str = Field(
        default="HF_TOKEN",
        min_length=1,
        max_length=253,
        pattern=_SECRET_KEY,
        description="Key inside the Secret.",
    )


class ModelShapeSpec(ApiModel):
    """A model's architecture, from its config.json, for the KV-cache fit check of models the built-in table
    does not know."""

    parameters_billions: float = Field(
        gt=0,
        le=100000,
        description="Parameter count in billions (all experts of a mixture-of-experts model).",
    )
    num_layers: int = Field(ge=1, le=10000, description="num_hidden_layers in config.json.")
    num_kv_heads: int = Field(ge=1, le=10000, description="num_key_value_heads in config.json.")
    head_dim: int = Field(
        ge=1, le=65536, description="head_dim in config.json, or hidden_size / num_attention_heads."
    )
    max_position_embeddings: int | None = Field(
        default=None,
        ge=1,
        description="Context length the model supports (max_position_embeddings); the fit check's "
        "--max-model-len when the engine args do not set one.",
    )


class ModelSpec(ApiModel):
    """What the engine loads and the name clients ask for."""

    name: str = Field(
        min_length=1,
        max_length=512,
        description="Model the engine loads: a Hugging Face repo id (meta-llama/Llama-3.1-8B-Instruct) or a path.",
    )
    served_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description='The OpenAI "model" value clients send. Defaults to the LLMServe\'s name.',
    )
    revision: str | None = Field(
        default=None, min_length=1, description="Model revision (branch, tag or commit) to load."
    )
    hf_token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding a Hugging Face token, exported to the engine as HF_TOKEN.",
    )
    shape: ModelShapeSpec | None = Field(
        default=None,
        description="The model's architecture, for the CapacityFit check of a model the operator's built-in "
        "table does not know. Overrides the table when set.",
    )


class EnvVar(ApiModel):
    """An environment variable for the engine container."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name.")
    value: str = Field(default="", description="Variable value.")


class EngineSpec(ApiModel):
    """The inference engine that serves the model."""

    kind: Literal["vllm", "simulator"] = Field(
        default="vllm",
        description="vllm runs vLLM's OpenAI server; simulator runs llmserve's GPU-less vLLM simulator.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=_IMAGE,
        description="Container image ([registry/]repository[:tag][@digest]). Defaults to "
        "vllm/vllm-openai:v0.33.0 or the simulator image.",
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Extra engine arguments, e.g. --max-model-len=8192 or --max-num-seqs=64.",
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables.")
    drain_seconds: int = Field(
        default=600,
        ge=0,
        le=86400,
        description="How long a replica being removed (scale-down, rollout, node drain) may keep finishing "
        "the generations it has in flight after it leaves rotation; its pod's grace period. The default "
        "fits long generations (minutes); a request still running when it ends is cut.",
    )


class ResourcesSpec(ApiModel):
    """Compute for one replica."""

    gpus: int = Field(
        default=1, ge=0, le=16, description="nvidia.com/gpu per replica (tensor parallel size)."
    )
    gpu_product: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=_LABEL_VALUE,
        description="Required nvidia.com/gpu.product node label (a label value), e.g. NVIDIA-H100-80GB-HBM3.",
    )
    cpu: str | None = Field(default=None, pattern=_QUANTITY, description="CPU request and limit, e.g. 8.")
    memory: str | None = Field(
        default=None, pattern=_QUANTITY, description="Memory request and limit, e.g. 64Gi."
    )
    shm_size: str = Field(
        default="8Gi", pattern=_QUANTITY, description="Size of the in-memory /dev/shm volume."
    )
    gpu_memory: str | None = Field(
        default=None,
        pattern=_QUANTITY,
        description="Memory of one GPU (e.g. 48Gi), for the CapacityFit check when gpuProduct is unset or not "
        "in the operator's built-in table.",
    )


class SloSpec(ApiModel):
    """Latency users should see. The autoscaler scales up when the engines' own histograms breach it and sizes
    the fleet from arrivals against what one replica serves within it."""

    time_to_first_token_seconds: float = Field(
        gt=0,
        le=600,
        description="Time to first token (vllm:time_to_first_token_seconds) at the percentile, at most.",
    )
    inter_token_latency_seconds: float = Field(
        gt=0,
        le=10,
        description="Inter-token latency (vllm:inter_token_latency_seconds) at the percentile, at most.",
    )
    percentile: float = Field(
        default=90,
        ge=50,
        le=99.9,
        description="Which percentile of each latency the targets bound (50-99.9).",
    )


class AutoscalingSpec(ApiModel):
    """How replicas follow load. The autoscaler writes spec.replicas through the scale subresource."""

    enabled: bool = Field(
        default=True,
        description="Run llmserve's autoscaler. Set false to let kubectl scale, an HPA or KEDA decide.",
    )
    interval_seconds: int = Field(default=5, ge=1, le=300, description="How often engines are scraped.")
    queue_depth_target: float = Field(
        default=4, gt=0, le=10000, description="Waiting requests per replica the autoscaler aims for."
    )
    kv_cache_target: float = Field(
        default=0.8, gt=0, le=1, description="KV-cache utilization (0-1] per replica the autoscaler aims for."
    )
    batch_slots_target: float | None = Field(
        default=None,
        ge=0.1,
        le=1,
        description="Share (0.1 to 1) of the engine's batch slots (--max-num-seqs) a replica fills at target; the "
        "rest is standing headroom for bursts that arrive while new replicas start (lower: fewer SLO misses "
        "in a sudden spike, more GPU-hours). Defaults to kvCacheTarget.",
    )
    tolerance: float = Field(
        default=0.1, ge=0, lt=1, description="No rescale while the load ratio is within 1 ± tolerance."
    )
    scale_up_max_step: int = Field(
        default=4, ge=1, le=1000, description="At most this many replicas are added in one decision."
    )
    scale_down_delay_seconds: int = Field(
        default=300, ge=0, le=86400, description="Stabilization window before replicas are removed."
    )
    scale_to_zero_idle_seconds: int = Field(
        default=600,
        ge=0,
        le=604800,
        description="With minReplicas 0, scale to zero after this long with no request.",
    )
    metrics_source: Literal["direct", "prometheus"] | None = Field(
        default=None,
        description="Where the signals come from: direct scrapes of every ready replica's /metrics, or a "
        "Prometheus server. Defaults to the operator's LLMSERVE_AUTOSCALER_METRICS_SOURCE (direct).",
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=2048,
        description="Prometheus base URL for metricsSource prometheus. Defaults to the operator's "
        "LLMSERVE_PROMETHEUS_URL.",
    )

    slo: SloSpec | None = Field(
        default=None,
        description="Latency targets. When set, replicas are sized from the arrival rate and token mix against "
        "what one replica serves within them, and a breach of either target scales up even when queue "
        "and KV cache look fine. Needs metricsSource direct.",
    )

    @property
    def effective_batch_slots_target(self) -> float:
        """batchSlotsTarget, or kvCacheTarget when unset (one utilization target for blocks and slots)."""
        return self.kv_cache_target if self.batch_slots_target is None else self.batch_slots_target


class ModelCacheSpec(ApiModel):
    """A PersistentVolumeClaim holding downloaded model weights."""

    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
        description="Name of an existing PVC (a DNS subdomain).",
    )
    mount_path: str = Field(
        default="/root/.cache/huggingface",
        min_length=1,
        max_length=1024,
        pattern=r"^/[^:]*$",
        description="Where the claim is mounted (HF_HOME points here): an absolute path, not /, /dev or "
        "/dev/shm (the engine's shared-memory volume) or below it, without '..' or ':'.",
    )
    read_only: bool = Field(default=False, description="Mount the claim read-only.")


class BurstSpec(ApiModel):
    """Renting replicas from a BurstPool when the cluster's GPUs run out."""

    pool: str = Field(
        pattern=_DNS_SUBDOMAIN,
        max_length=253,
        description="Name of the cluster-scoped BurstPool to rent from.",
    )
    max_replicas: int = Field(
        default=1, ge=1, le=100, description="Most burst replicas this model rents at once."
    )
    unschedulable_seconds: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="How long a local replica must stay Unschedulable for lack of GPUs before one is rented "
        "(leaves room for a cluster autoscaler to add nodes first).",
    )
    scale_in_delay_seconds: int = Field(
        default=120,
        ge=0,
        le=86400,
        description="How long fewer burst replicas must be wanted before the surplus is drained. A local replica "
        "becoming Ready drains one burst replica at once.",
    )


class LLMServeSpec(ApiModel):
    """Desired state of an LLMServe."""

    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="The engine that serves it.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute per replica.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Desired replicas; written by the autoscaler or `kubectl scale`. Defaults to minReplicas.",
    )
    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Lowest replica count (0 allows idle to zero)."
    )
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Highest replica count.")
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="Autoscaling from queue depth and KV-cache use."
    )
    model_cache: ModelCacheSpec | None = Field(default=None, description="Optional model-cache volume.")
    burst: BurstSpec | None = Field(
        default=None, description="Rent replicas from a BurstPool when local replicas cannot be scheduled."
    )

    @model_validator(mode="after")
    def _bounds(self) -> LLMServeSpec:
        # Mirrors the CEL rules below so the operator can validate objects the apiserver already stored
        # under an older schema.
        for rule in SPEC_RULES:
            if not rule.check(self):
                raise ValueError(f"{rule.field}: {rule.message}")
        return self

    def desired_replicas(self) -> int:
        return self.min_replicas if self.replicas is None else self.replicas

    def served_name(self, resource_name: str) -> str:
        return self.model.served_name or resource_name


class Rule:
    """A cross-field check, enforced by the apiserver (CEL) and by the operator (Python)."""

    def __init__(self, cel: str, message: str, field: str, check: Any) -> None:
        self.cel, self.message, self.field, self.check = cel, message, field, check

    def to_validation(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, "fieldPath": self.field}


SPEC_RULES = [
    Rule(
        "self.minReplicas <= self.maxReplicas",
        "minReplicas must be less than or equal to maxReplicas",
        ".minReplicas",
        lambda s: s.min_replicas <= s.max_replicas,
    ),
    Rule(
        "!has(self.replicas) || (self.replicas >= self.minReplicas && self.replicas <= self.maxReplicas)",
        "replicas must lie between minReplicas and maxReplicas",
        ".replicas",
        lambda s: s.replicas is None or s.min_replicas <= s.replicas <= s.max_replicas,
    ),
    Rule(
        f"!has(self.modelCache) || !self.modelCache.mountPath.matches('{_RESERVED_MOUNT}')",
        f"modelCache.mountPath must not be /, /dev, or {SHM_MOUNT_PATH} or below it ({SHM_MOUNT_PATH} is the "
        "engine's shared-memory volume)",
        ".modelCache.mountPath",
        lambda s: s.model_cache is None or not re.search(_RESERVED_MOUNT, s.model_cache.mount_path),
    ),
    Rule(
        "!has(self.modelCache) || !self.modelCache.mountPath.matches('(^|/)[.][.](/|$)')",
        "modelCache.mountPath must not contain '..'",
        ".modelCache.mountPath",
        lambda s: s.model_cache is None or not re.search(r"(^|/)[.][.](/|$)", s.model_cache.mount_path),
    ),
    Rule(
        "self.engine.kind == 'simulator' || self.resources.gpus >= 1",
        "engine kind vllm needs at least 1 GPU per replica",
        ".resources.gpus",
        lambda s: s.engine.kind == "simulator" or s.resources.gpus >= 1,
    ),
]


class Recommendation(ApiModel):
    """One replica count the autoscaler recommended, kept while it can still bound a scale-down."""

    replicas: int = Field(ge=0, description="Recommended replicas.")
    time: str = Field(description="When it was recommended (RFC 3339).")


class ScaleStatus(ApiModel):
    """What the autoscaler saw and did last."""

    queue_depth_per_replica: float | None = Field(
        default=None, description="Waiting requests per ready replica."
    )
    kv_cache_utilization: float | None = Field(
        default=None, description="Mean KV-cache use of ready replicas (0-1)."
    )
    desired_replicas: int | None = Field(default=None, description="The autoscaler's latest recommendation.")
    last_scale_time: str | None = Field(default=None, description="When the autoscaler last rescaled.")
    last_scale_reason: str | None = Field(default=None, description="Why it last rescaled.")
    requests_running_per_replica: float | None = Field(
        default=None, description="Requests in the running batch per ready replica."
    )
    scraped_replicas: int | None = Field(
        default=None, description="Ready replicas whose metrics were read in the latest decision."
    )
    recommendations: list[Recommendation] = Field(
        default_factory=list,
        max_length=1000,
        description="Recommendations inside the scale-down stabilization window; replicas are not "
        "removed below the highest one. Kept here so an operator restart does not forget them.",
    )
    last_active_time: str | None = Field(
        default=None,
        description="When a replica last had a request running or waiting (the scale-to-zero idle clock).",
    )
    replicas_raised_outside_time: str | None = Field(
        default=None,
        description="When spec.replicas was last raised by someone other than the autoscaler (kubectl "
        "scale, the gateway waking the model); those replicas are held for the scale-down window even "
        "while starting. Kept here so an operator restart does not forget it.",
    )
    arrivals_per_second: float | None = Field(
        default=None, description="Requests per second arriving at the engines (with autoscaling.slo)."
    )
    replica_requests_per_second: float | None = Field(
        default=None,
        description="Requests per second one replica serves within the SLO at the current token mix.",
    )
    latency: str | None = Field(
        default=None,
        description="The worse of TTFT and inter-token latency at the SLO percentile, vs target.",
    )
    last_burst_time: str | None = Field(
        default=None,
        description="When the latest episode of demand jumps began (with autoscaling.slo): until "
        "scaleDownDelaySeconds after it, replicas are held that long rather than one start-up.",
    )


class BurstReplicasStatus(ApiModel):
    """Local and rented replicas apart, and what the rented ones cost (written by the burst controller)."""

    pool: str | None = Field(default=None, description="The BurstPool rented from.")
    local_desired_replicas: int = Field(default=0, ge=0, description="Replicas the Deployment asks for.")
    local_ready_replicas: int = Field(default=0, ge=0, description="Local replicas passing readiness.")
    unschedulable_replicas: int = Field(
        default=0, ge=0, description="Local replicas Unschedulable longer than burst.unschedulableSeconds."
    )
    desired_replicas: int = Field(default=0, ge=0, description="Burst replicas wanted now.")
    replicas: int = Field(
        default=0, ge=0, description="Burst replicas rented (any phase, draining excluded)."
    )
    ready_replicas: int = Field(default=0, ge=0, description="Burst replicas serving.")
    burn_rate_usd_per_hour: float = Field(
        default=0, ge=0, description="USD/hour of this model's rented replicas."
    )
    rented_gpus: int = Field(
        default=0,
        ge=0,
        description="GPUs the model's billed instances hold (what burnRateUsdPerHour pays for).",
    )
    spent_this_month_usd: float = Field(
        default=0, ge=0, description="USD this model's rented replicas cost this month."
    )


class SpendStatus(ApiModel):
    """GPU-hours held and what they cost."""

    gpu_hours: float = Field(
        default=0, ge=0, description="GPU-hours held (pods scheduled, or instances rented)."
    )
    usd: float = Field(default=0, ge=0, description="Their cost in US dollars.")


class CostMonthStatus(ApiModel):
    """One calendar month (UTC) of GPU time, money and output tokens."""

    month: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}$", description="The month, YYYY-MM (UTC).")
    local: SpendStatus = Field(
        default_factory=SpendStatus,
        description="Local GPUs: every scheduled replica's GPUs at the platform's price for its GPU product.",
    )
    rented: SpendStatus = Field(
        default_factory=SpendStatus, description="Rented (burst) GPUs at the provider's hourly price."
    )
    total_usd: float = Field(default=0, ge=0, description="local.usd + rented.usd.")
    output_tokens: int = Field(default=0, ge=0, description="Tokens the engines generated (their counters).")
    usd_per_million_output_tokens: float | None = Field(
        default=None, ge=0, description="totalUsd per million output tokens; unset until a token is served."
    )


class EngineTokenCounter(ApiModel):
    """The last output-token counter read from one engine: the baseline for the next reading."""

    pod: str = Field(description="Replica pod (or burst instance) name.")
    output_tokens: float = Field(ge=0, description="Its vllm:generation_tokens_total when last read.")


class CostStatus(CostMonthStatus):
    """What this LLMServe cost this month, written by the cost meter (field manager llmserve-cost)."""

    prices_are_examples: bool = Field(
        default=False,
        description="True while the operator uses its example GPU prices: set the chart's cost.usdPerGpuHour.",
    )
    last_update_time: str | None = Field(default=None, description="When the meter last advanced (RFC 3339).")
    engine_counters: list[EngineTokenCounter] = Field(
        default_factory=list,
        max_length=1000,
        description="Counter baselines, kept here so an operator restart neither loses nor recounts tokens.",
    )
    previous_month: CostMonthStatus | None = Field(
        default=None, description="The month before, as it closed."
    )


class LLMServeStatus(ApiModel):
    """Observed state of an LLMServe."""

    replicas: int = Field(default=0, description="Replicas that exist (any state).")
    desired_replicas: int = Field(
        default=0, description="Replicas asked for (spec.replicas, or minReplicas)."
    )
    ready_replicas: int = Field(default=0, description="Replicas passing their readiness probe.")
    unschedulable_replicas: int = Field(
        default=0, description="Replicas Pending because no node can take them (e.g. not enough GPUs)."
    )
    selector: str = Field(
        default="", description="Label selector of the replica pods (for the scale subresource)."
    )
    endpoint: str | None = Field(default=None, description="In-cluster OpenAI base URL of the model.")
    served_model_name: str | None = Field(default=None, description='The "model" value clients send.')
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, Degraded.")
    autoscaling: ScaleStatus | None = Field(default=None, description="Autoscaler observations.")
    burst: BurstReplicasStatus | None = Field(default=None, description="Burst replicas (local vs rented).")
    cost: CostStatus | None = Field(
        default=None, description="GPU-hours, dollars and output tokens this month (UTC)."
    )


class ObjectMeta(ApiModel):
    """The subset of metadata the operator reads."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    name: str = Field(pattern=_DNS_LABEL, max_length=63, description="Resource name (a DNS label).")
    namespace: str = Field(default="default", description="Namespace.")
    uid: str | None = Field(default=None, description="UID.")
    generation: int | None = Field(default=None, description="Generation.")


class LLMServe(ApiModel):
    """An LLM served by vLLM replicas on GPU nodes behind an OpenAI-compatible endpoint."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["llmserve.dev/v1alpha1"] = Field(
        default="llmserve.dev/v1alpha1", description="API version."
    )
    kind: Literal["LLMServe"] = Field(default="LLMServe", description="Kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: LLMServeSpec = Field(description="Desired state.")
    status: LLMServeStatus | None = Field(default=None, description="Observed state.")
