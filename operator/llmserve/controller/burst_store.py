"""The burst controller's Kubernetes writes: pool status, LLMServe status.burst, credentials, instance Secrets.

Every status write is a server-side apply of /status under the field manager `llmserve-burst`, so the
burst controller owns exactly its fields and never races the reconciler or the autoscaler.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any

from llmserve import kube
from llmserve.api.base import Condition
from llmserve.api.burstpool import KIND as POOL_KIND
from llmserve.api.burstpool import BurstPoolStatus
from llmserve.api.llmserve import GROUP, VERSION, BurstReplicasStatus
from llmserve.api.llmserve import KIND as LLMSERVE_KIND
from llmserve.burst.budget import parse_time
from llmserve.burst.static import StaticProvider

log = logging.getLogger(__name__)

FIELD_MANAGER = "llmserve-burst"
INSTANCE_LABEL = f"{GROUP}/burst-instance"
POOL_LABEL = f"{GROUP}/burst-pool"

Obj = dict[str, Any]


class KubePoolStore:
    """The StatusStore of one BurstPool: its /status, read fresh before each step (never from a cache)."""

    def __init__(self, pool: str) -> None:
        self.pool = pool

    async def load(self) -> BurstPoolStatus:
        body = await kube.retry(lambda: kube.get(POOL_KIND, None, self.pool))
        if body is None:
            raise kube.KubeError(f"BurstPool {self.pool} is gone", 404)
        return BurstPoolStatus.model_validate(body.get("status") or {})

    async def save(self, status: BurstPoolStatus) -> None:
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": POOL_KIND,
            "metadata": {"name": self.pool},
            "status": status.to_wire(),
        }
        await kube.retry(lambda: kube.apply(manifest, FIELD_MANAGER, "status"))


async def restore_static_claims(provider: StaticProvider, store: KubePoolStore, cluster_id: str) -> None:
    """Gives a new static client the claims its pool's status records (confirmed ones: an intent without
    an id never reached a client that could claim a slot for it)."""
    status = await store.load()
    claims = [
        (r.id, r.name, cluster_id, parse_time(r.created) or datetime.now(UTC))
        for r in status.instances
        if r.id is not None
    ]
    unknown = provider.restore_claims(claims)
    log.info("event=static_claims_restored pool=%s claims=%d unknown=%d", store.pool, len(claims) - len(unknown),
             len(unknown))  # fmt: skip


async def write_llmserve_burst_status(
    namespace: str, name: str, burst: BurstReplicasStatus, conditions: list[Condition]
) -> None:
    """Applies status.burst and the burst conditions of one LLMServe (404: it was deleted meanwhile)."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": LLMSERVE_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "status": {"burst": burst.to_wire(), "conditions": [c.to_wire() for c in conditions]},
    }
    try:
        await kube.retry(lambda: kube.apply(manifest, FIELD_MANAGER, "status"))
    except kube.KubeError as err:
        if err.status != 404:
            raise


def secret_name(instance_name: str) -> str:
    return f"burst-{instance_name}"


async def delete_instance_secret(operator_namespace: str, instance_name: str) -> None:
    await kube.retry(lambda: kube.delete("Secret", operator_namespace, secret_name(instance_name)))


async def read_credentials(operator_namespace: str, secret: str, key: str) -> str | None:
    """The provider API key, or None when the Secret or key is missing (the caller says which in a condition)."""
    body = await kube.retry(lambda: kube.get("Secret", operator_namespace, secret))
    data = (body or {}).get("data") or {}
    if key not in data:
        return None
    return base64.b64decode(data[key]).decode().strip()
