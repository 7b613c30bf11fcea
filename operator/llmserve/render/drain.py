"""How an engine replica leaves without cutting generations: grace period, preStop, PDB (pure).

When a pod is deleted, Kubernetes marks its endpoint terminating and sends SIGTERM at the same time;
gateways and kube-proxies learn of the endpoint change a moment later. The preStop sleep keeps the
engine serving until they have, then SIGTERM makes vLLM (and the simulator) stop admitting and finish
what it has, for up to spec.engine.drainSeconds. A PodDisruptionBudget lets voluntary disruptions
(node drains) take one replica at a time.
"""

from __future__ import annotations

from typing import Any

from llmserve.api.llmserve import LLMServeSpec
from llmserve.render.labels import common_labels, owner_reference, selector_labels

Manifest = dict[str, Any]

SIM_GRACE_ENV = "LLMSERVE_SIM_SHUTDOWN_GRACE_SECONDS"
PRESTOP_SECONDS = 5  # > the gateway's endpoint-watch latency (~1 s) with room for kube-proxy


def apply_drain(spec: LLMServeSpec, pod_spec: Manifest) -> Manifest:
    container = pod_spec["containers"][0]
    container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}
    pod_spec["terminationGracePeriodSeconds"] = PRESTOP_SECONDS + spec.engine.drain_seconds
    if spec.engine.kind == "simulator":
        # vLLM drains until the grace period ends; the simulator is told the same bound (by env, so
        # its arguments stay exactly vLLM's).
        drain = {"name": SIM_GRACE_ENV, "value": str(spec.engine.drain_seconds)}
        container["env"] = [*container.get("env", []), drain]
    return pod_spec


def render_pdb(name: str, namespace: str, uid: str, spec: LLMServeSpec) -> Manifest:
    """At most one engine replica away at a time for voluntary disruptions (never blocks scale-down)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": f"{name}-engine",
            "namespace": namespace,
            "labels": common_labels(name, spec.engine.kind),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name)},
            # a crash-looping replica may be evicted even when the budget is spent
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
