"""Per-LLMServe engine API keys (pure): derivation from one master secret, and the Secrets holding them.

Each engine is started with vLLM's `--api-key` (env `VLLM_API_KEY`), so a pod that reaches an engine
without going through the gateway is refused. The key of an LLMServe is
HMAC-SHA256(master, "llmserve-engine-key/v1/<namespace>/<name>/<uid>"): the operator writes it into the
Secret `<name>-engine-key` (owned by the LLMServe, deleted with it), and the gateway derives the same
key from the master secret, so the gateway needs read access to one Secret by name instead of to
every Secret of every namespace. A new LLMServe with the same name gets a new uid and so a new key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from llmserve.render.labels import LLMSERVE_LABEL, MANAGED_BY, owner_reference

Obj = dict[str, Any]

ENGINE_KEY_LABEL = "llmserve.dev/engine-key"  # marks per-LLMServe engine key Secrets
ENGINE_KEY_FIELD = "api-key"  # data key inside the per-LLMServe Secret
MASTER_FIELD = "master-key"  # data key inside the master Secret
# During a rotation, the master being replaced: the gateway still reaches engines started with it.
PREVIOUS_MASTER_FIELD = "previous-master-key"
DEFAULT_MASTER_NAME = "llmserve-engine-key-master"
MASTER_SECRET_ENV = "LLMSERVE_ENGINE_KEY_SECRET"  # "namespace/name" of the master Secret
MIN_MASTER_BYTES = 32


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def master_secret_ref(value: str, own_namespace: str) -> SecretRef:
    """Where the master secret lives (the setting LLMSERVE_ENGINE_KEY_SECRET / --engine-key-secret):
    `namespace/name`, a bare name in the operator's namespace, or the default name there."""
    raw = value.strip()
    if not raw:
        return SecretRef(own_namespace, DEFAULT_MASTER_NAME)
    namespace, slash, name = raw.partition("/")
    if not slash:
        return SecretRef(own_namespace, namespace)
    if not namespace or not name:
        raise ValueError(f"{MASTER_SECRET_ENV} must be 'namespace/name' or 'name', got {raw!r}")
    return SecretRef(namespace, name)


def derive_engine_key(master: bytes, namespace: str, name: str, uid: str) -> str:
    """The engine key of one LLMServe (pure; the gateway and the operator both call it)."""
    message = f"llmserve-engine-key/v1/{namespace}/{name}/{uid}".encode()
    digest = hmac.new(master, message, hashlib.sha256).digest()
    return "sk-engine-" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def key_fingerprint(key: str) -> str:
    """A short non-reversible tag of a key, put on the pod template so a new key rolls the pods."""
    return hashlib.sha256(b"llmserve-fingerprint/" + key.encode()).hexdigest()[:16]


def engine_key_secret_name(llmserve: str) -> str:
    return f"{llmserve}-engine-key"


def master_from_secret(secret: Obj) -> bytes:
    """The master key bytes of the master Secret; ValueError (naming the field) when missing or short."""
    encoded = (secret.get("data") or {}).get(MASTER_FIELD)
    if not encoded:
        raise ValueError(f"Secret {secret['metadata'].get('name')!r} has no data field {MASTER_FIELD!r}")
    master = base64.b64decode(encoded)
    if len(master) < MIN_MASTER_BYTES:
        raise ValueError(f"data.{MASTER_FIELD} must hold at least {MIN_MASTER_BYTES} bytes")
    return master


def previous_master_from_secret(secret: Obj) -> bytes | None:
    """The rotation's previous master (`previous-master-key`), or None when the Secret has none or it
    is not a usable key."""
    encoded = (secret.get("data") or {}).get(PREVIOUS_MASTER_FIELD)
    if not encoded:
        return None
    try:
        previous = base64.b64decode(encoded, validate=True)
    except ValueError:
        return None
    return previous if len(previous) >= MIN_MASTER_BYTES else None


def render_master_secret(ref: SecretRef, master: bytes) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": "llmserve"},
        },
        "data": {MASTER_FIELD: base64.b64encode(master).decode()},
    }


def render_engine_key_secret(name: str, namespace: str, uid: str, key: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": engine_key_secret_name(name),
            "namespace": namespace,
            "labels": {
                LLMSERVE_LABEL: name,
                ENGINE_KEY_LABEL: "true",
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "app.kubernetes.io/part-of": "llmserve",
            },
            "ownerReferences": [owner_reference(name, uid)],
        },
        "data": {ENGINE_KEY_FIELD: base64.b64encode(key.encode()).decode()},
    }
