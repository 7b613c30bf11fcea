"""Which rented instances may take requests: the view the gateway and the autoscaler read from pool status."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmserve.api.burstpool import BurstPoolStatus

# The Secret (in the operator's namespace) holding an instance's API key under "apiKey".
SECRET_PREFIX = "burst-"


@dataclass(frozen=True)
class BurstBackend:
    owner: str  # <namespace>/<llmserve name>
    instance: str  # deterministic instance name
    url: str  # base URL (the provider's HTTPS proxy or the instance's own TLS endpoint)
    key_secret: str  # Secret name with the per-instance key
    usd_per_hour: float


def serving_backends(statuses: Iterable[BurstPoolStatus]) -> dict[str, list[BurstBackend]]:
    """Ready instances by owner. Draining and terminating ones are left out, so the gateway stops sending
    them new requests while in-flight ones finish; instances not yet serving are left out too."""
    out: dict[str, list[BurstBackend]] = {}
    for status in statuses:
        for record in status.instances:
            if record.id is None or not record.endpoint or not record.ready_since:
                continue
            if record.draining_since or record.terminating_since:
                continue
            backend = BurstBackend(
                record.owner, record.name, record.endpoint, SECRET_PREFIX + record.name, record.usd_per_hour
            )
            out.setdefault(record.owner, []).append(backend)
    return out
