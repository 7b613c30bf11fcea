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
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
DEFAULT_SIMULATOR_IMAGE = "ghcr.io/llmserve/llmserve-sim:0.1.0"

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
        "vllm/vllm-openai:v0.11.0 or the simulator image.",
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Extra engine arguments, e.g. --max-model-len=8192 or --max-num-seqs=64.",
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables.")


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
