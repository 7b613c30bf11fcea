"""LLMServe manifests for tests, built from the example a user would apply, and waiting for Ready."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import ClusterHandle, condition, wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_PATH = REPO / "examples" / "llama-8b-simulated.yaml"
EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_PATH.read_text())


def llmserve(name: str = "llama", **spec: Any) -> dict[str, Any]:
    """The example LLMServe under another name, with top-level spec fields replaced."""
    manifest = copy.deepcopy(EXAMPLE)
    manifest["metadata"] = {"name": name}
    manifest["spec"].update(spec)
    return manifest


def wait_ready(
    cluster: ClusterHandle, namespace: str, name: str, ready: int, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = cluster.get("llmserve", name, namespace)
        status = (obj or {}).get("status") or {}
        if condition(obj, "Ready").get("status") == "True" and status.get("readyReplicas") == ready:
            return obj
        return None

    return wait_for(check, timeout=timeout, message=f"{namespace}/{name} Ready with {ready} replicas")


def engine_key_headers(cluster: ClusterHandle, namespace: str, name: str = "llama") -> dict[str, str]:
    """The Authorization header an engine of this LLMServe accepts (its engine-key Secret), for tests
    that call engine pods directly instead of through the gateway."""
    import base64

    secret = wait_for(
        lambda: cluster.get("secret", f"{name}-engine-key", namespace),
        timeout=30,
        message="engine key Secret",
    )
    assert secret is not None
    return {"Authorization": "Bearer " + base64.b64decode(secret["data"]["api-key"]).decode()}
