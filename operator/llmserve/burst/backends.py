"""Which rented instances may take requests: the view the gateway and the autoscaler read from pool status."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmserve.api.burstpool import BurstPoolStatus
from llmserve.burst.security import fingerprint_of_pem, pinned_ssl_context

# The Secret (in the operator's namespace) holding an instance's API key under "apiKey", and for an
# engine serving TLS itself (Vast.ai) its certificate and the certificate's SHA-256 fingerprint.
SECRET_PREFIX = "burst-"
INSTANCE_LABEL = "llmserve.dev/burst-instance"
API_KEY_FIELD = "apiKey"
TLS_CERT_FIELD = "tlsCert"
TLS_FINGERPRINT_FIELD = "tlsFingerprintSha256"
PROVIDER_FIELD = "provider"


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


# -- how to reach one instance: its key and the TLS to expect (from its Secret) ------------------------


@dataclass(frozen=True)
class InstanceAccess:
    api_key: str = field(repr=False)
    ssl_context: ssl.SSLContext = field(repr=False, compare=False)
    pinned: bool  # True: the instance's own certificate (Vast); False: the provider's proxy (RunPod)


def access_from_secret(
    secret: dict[str, Any], overrides: Mapping[str, Mapping[str, str]] | None = None
) -> InstanceAccess:
    """Parses an instance Secret; raises ValueError naming the missing or bad field (never its value).
    `overrides` are the process's settings' burst_providers: a provider's "ca_file"
    (LLMSERVE_BURST_<PROVIDER>_CA_FILE) is a CA to trust for its TLS proxy (the fake's, in tests).

    A pinned certificate must match the fingerprint recorded next to it, so a Secret edited by hand
    cannot silently swap the certificate the gateway trusts.
    """
    data = secret.get("data") or {}

    def text(key: str) -> str:
        return base64.b64decode(data[key]).decode() if data.get(key) else ""

    api_key = text(API_KEY_FIELD)
    if not api_key:
        raise ValueError(f"instance Secret has no {API_KEY_FIELD}")
    cert_pem = text(TLS_CERT_FIELD)
    if cert_pem:
        expected = text(TLS_FINGERPRINT_FIELD)
        if not expected or fingerprint_of_pem(cert_pem) != expected.replace(":", "").lower():
            raise ValueError(f"instance Secret's {TLS_CERT_FIELD} does not match {TLS_FINGERPRINT_FIELD}")
        return InstanceAccess(api_key, pinned_ssl_context(cert_pem), pinned=True)
    ca_file = (overrides or {}).get(text(PROVIDER_FIELD), {}).get("ca_file")
    return InstanceAccess(api_key, ssl.create_default_context(cafile=ca_file), pinned=False)
