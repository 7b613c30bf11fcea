"""The value types and the one protocol every GPU provider client implements.

Callers (the burst controller, the reaper, tests) decide on `ProviderError.kind`, never on a
provider's status code or body. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

# The env marker every instance this project creates carries (and the label, where a provider has
# labels): `<cluster id>`. `list_owned` matches it together with the name prefix.
OWNER_ENV = "LLMSERVE_CLUSTER_ID"
NAME_PREFIX = "llms"


class ErrorKind(enum.StrEnum):
    """What went wrong, as the caller must act on it."""

    CAPACITY = "capacity"  # no machine for this offer/GPU type now: try the next offer
    RATE_LIMITED = "rate_limited"  # back off (retry_after_seconds when the provider said)
    AUTH = "auth"  # key missing, wrong or revoked: stop calling, raise a condition, keep state
    BALANCE = "balance"  # account out of credit: no create; running instances may stop
    INVALID = "invalid"  # our request was refused as malformed: a bug or a bad pool spec
    NOT_FOUND = "not_found"  # the instance (or offer) does not exist; for terminate: already gone
    CONFLICT = "conflict"  # the instance is in a state that refuses the action: retry later
    TRANSIENT = "transient"  # nothing happened (refused connection, 5xx before the request landed)
    AMBIGUOUS = "ambiguous"  # the request may have been carried out: list and adopt, never re-create


class ProviderError(Exception):
    """A provider call failed. The message never holds a credential or a response body verbatim."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str = "",
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.provider = provider
        self.retry_after_seconds = retry_after_seconds

    def __repr__(self) -> str:
        return f"ProviderError(kind={self.kind.value!r}, provider={self.provider!r}, message={str(self)!r})"


class Phase(enum.StrEnum):
    PROVISIONING = "Provisioning"  # accepted, no machine yet or image pulling
    STARTING = "Starting"  # container running, engine not answering yet
    RUNNING = "Running"
    STOPPING = "Stopping"
    EXITED = "Exited"  # the container stopped (may still bill storage where the provider does)
    FAILED = "Failed"
    TERMINATED = "Terminated"  # gone for good: bills nothing
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Offer:
    provider: str
    gpu_type: str
    gpus: int
    usd_per_hour: float  # for the whole offer (all its GPUs)
    region: str
    offer_id: str  # opaque; Vast.ai's ask id, RunPod's GPU type id + data center


@dataclass(frozen=True)
class OfferQuery:
    gpu_type: str
    gpus: int
    max_usd_per_hour: float
    regions: tuple[str, ...] = ()
    cloud_type: str | None = None  # RunPod: SECURE | COMMUNITY


@dataclass(frozen=True)
class LaunchSpec:
    name: str  # deterministic: see `instance_name`
    cluster_id: str
    image: str
    # repr=False: args carry --api-key and env may carry tokens; a logged spec must not show them.
    args: tuple[str, ...] = field(repr=False)
    env: dict[str, str] = field(repr=False)  # OWNER_ENV is added by the client; never logged
    port: int
    gpu_type: str
    gpus: int
    max_usd_per_hour: float  # the highest price accepted for the whole instance
    disk_gb: int = 50  # container disk; the image and model weights live here
    # Files the container needs before the engine starts (path -> text: the engine guard module, and
    # on Vast.ai its TLS pair); they travel as env chunks (burst.start_script); never logged.
    files: dict[str, str] = field(default_factory=dict, repr=False)
    # The container's ENTRYPOINT in place of the image's (empty: the image's own, `vllm serve` for vLLM);
    # `args` follow it. Rented engines use burst.start_script.ENTRYPOINT, which writes `files` first.
    entrypoint: tuple[str, ...] = ()


@dataclass(frozen=True)
class Instance:
    id: str
    name: str
    phase: Phase
    usd_per_hour: float
    created: datetime | None = None
    endpoint: str | None = None  # base URL once reachable, e.g. https://<id>-8000.proxy.runpod.net
    gpu_type: str = ""
    gpus: int = 0
    cluster_id: str | None = None  # from the env marker or label, when the provider returns it
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Account:
    ok: bool
    balance_usd: float | None = None  # when the provider reports one


@runtime_checkable
class Provider(Protocol):
    """One GPU provider. Every method may raise ProviderError; none retries a create."""

    name: str

    async def check_account(self) -> Account: ...

    async def list_offers(self, query: OfferQuery) -> list[Offer]: ...

    async def create(self, spec: LaunchSpec, offer: Offer) -> Instance: ...

    async def get(self, instance_id: str) -> Instance: ...

    async def list_owned(self, cluster_id: str) -> list[Instance]: ...

    async def terminate(self, instance_id: str) -> None:
        """Ends billing for good. An instance that is already gone is success, not an error."""
        ...

    async def aclose(self) -> None: ...


_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")


def instance_name(cluster_id: str, owner: str, slot: int) -> str:
    """`llms-<cluster id>-<hash of owner>-<slot>`: the same inputs always give the same name.

    `owner` is `<namespace>/<llmserve name>`; the hash keeps names short and free of characters a
    provider may refuse, and the slot numbers an LLMServe's burst replicas. Callers record the name in
    status before calling create, so a lost create response is found again by name.
    """
    cluster = _NAME_UNSAFE.sub("-", cluster_id.lower()).strip("-")[:16]
    owner_hash = hashlib.sha256(owner.encode()).hexdigest()[:10]
    return f"{NAME_PREFIX}-{cluster}-{owner_hash}-{slot}"


def owned_by(instance_name_: str, cluster_id: str) -> bool:
    """True when a name carries this cluster's prefix (ownership also needs the env marker/label)."""
    cluster = _NAME_UNSAFE.sub("-", cluster_id.lower()).strip("-")[:16]
    return (
        re.fullmatch(rf"{NAME_PREFIX}-{re.escape(cluster)}-[0-9a-f]{{10}}-[0-9]+", instance_name_) is not None
    )
