"""Renders the NetworkPolicy that admits only the gateway and the operator to an LLMServe's engines (pure).

Who may connect is configured once for the operator (the chart sets it from `networkPolicy.*` values):
`LLMSERVE_ENGINE_INGRESS_FROM` holds a JSON list of NetworkPolicyPeer objects. Without it, the peers
are the pods labelled as llmserve's gateway or operator in the operator's own namespace, never pods of the
LLMServe's namespace merely wearing those labels. The operator's settings read the variable once
(llmserve.settings.OperatorSettings.engine_ingress_peers).
"""

from __future__ import annotations

import json
from typing import Any

from llmserve.api.llmserve import ENGINE_PORT, LLMServeSpec
from llmserve.render.labels import COMPONENT_LABEL, common_labels, owner_reference, selector_labels

Manifest = dict[str, Any]

INGRESS_FROM_ENV = "LLMSERVE_ENGINE_INGRESS_FROM"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every Namespace


def default_peers(system_namespace: str) -> list[Manifest]:
    return [
        {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: system_namespace}},
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "llmserve"},
                "matchExpressions": [
                    {"key": COMPONENT_LABEL, "operator": "In", "values": ["gateway", "operator"]}
                ],
            },
        }
    ]


def parse_peers(raw: str) -> list[Manifest]:
    """The peers in `LLMSERVE_ENGINE_INGRESS_FROM`; ValueError naming the variable when malformed."""
    try:
        peers = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"{INGRESS_FROM_ENV} is not valid JSON: {err}") from None
    if not isinstance(peers, list) or not all(isinstance(p, dict) and p for p in peers):
        raise ValueError(f"{INGRESS_FROM_ENV} must be a JSON list of NetworkPolicyPeer objects")
    allowed = {"namespaceSelector", "podSelector", "ipBlock"}
    for index, peer in enumerate(peers):
        unknown = set(peer) - allowed
        if unknown:
            raise ValueError(f"{INGRESS_FROM_ENV}[{index}] has unknown fields {sorted(unknown)}")
    return peers


def render_network_policy(
    name: str, namespace: str, uid: str, spec: LLMServeSpec, peers: list[Manifest]
) -> Manifest:
    """Ingress to the engine pods only from `peers`, only on the engine port; egress is left open
    (engines download weights from the Hub)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{name}-engine",
            "namespace": namespace,
            "labels": common_labels(name, spec.engine.kind),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": ENGINE_PORT}]}],
        },
    }
