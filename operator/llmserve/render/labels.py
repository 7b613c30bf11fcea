"""Names and labels shared by every object rendered for an LLMServe."""

from __future__ import annotations

from llmserve.api.llmserve import GROUP, KIND, VERSION

LLMSERVE_LABEL = f"{GROUP}/llmserve"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY = "llmserve-operator"
FIELD_MANAGER = "llmserve-operator"


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select an LLMServe's engine pods (immutable once a Deployment exists)."""
    return {LLMSERVE_LABEL: name, COMPONENT_LABEL: "engine"}


def selector_string(name: str) -> str:
    return ",".join(f"{key}={value}" for key, value in selector_labels(name).items())


def common_labels(name: str, engine_kind: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/name": "vllm" if engine_kind == "vllm" else "llmserve-sim",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "llmserve",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_reference(name: str, uid: str) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
