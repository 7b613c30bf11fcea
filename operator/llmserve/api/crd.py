"""Generates the CustomResourceDefinitions from the pydantic models (the models are the source of truth)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from llmserve.api import burstpool as burstpool_api
from llmserve.api import llmserve as llmserve_api

JsonSchema = dict[str, Any]

# JSON Schema keywords that a Kubernetes structural schema (OpenAPI v3.0 subset) accepts as they are.
_KEPT_KEYWORDS = {
    "type", "description", "format", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
    "minItems", "maxItems", "default", "required",
}  # fmt: skip


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The model's JSON schema rewritten as a Kubernetes structural schema: refs inlined, no nulls."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(raw, raw.get("$defs", {}))


def _convert(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    node = dict(node)
    node.pop("$defs", None)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # the property's own description overrides the class docstring
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unions other than Optional cannot be expressed structurally: {branches}")
        # The branch is converted on its own (bounds and all); the property adds only its description
        # (its default is the None that Optional implies, which a structural schema leaves out).
        converted = _convert(branches[0], defs)
        if node.get("description"):
            converted["description"] = _explained(node["description"], converted)
        return converted
    out: JsonSchema = {k: v for k, v in node.items() if k in _KEPT_KEYWORDS and v is not None}
    if "const" in node:
        out["enum"] = [node["const"]]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            out[plain], out[bound] = node[bound], True
    if "properties" in node:
        out["type"] = "object"
        required = set(node.get("required", []))
        props: JsonSchema = {}
        for name, prop in node["properties"].items():
            converted = _convert(prop, defs)
            optional = "anyOf" in prop and any(b.get("type") == "null" for b in prop["anyOf"])
            if converted.get("type") == "object" and name not in required and not optional:
                # Lets the apiserver fill nested defaults when the user leaves the whole block out.
                converted.setdefault("default", {})
            props[name] = converted
        out["properties"] = props
    if "items" in node:
        out["items"] = _convert(node["items"], defs)
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], defs)
    if out.get("description") and out.get("type") not in ("object", None):
        out["description"] = _explained(out["description"], out)
    return out


def _explained(description: str, schema: JsonSchema) -> str:
    """The description with the default and bounds appended, so `kubectl explain` shows them."""
    notes = []
    if "default" in schema and schema.get("type") != "object":
        default = schema["default"]
        shown = str(default).lower() if isinstance(default, bool) else default
        notes.append(f"Default: {shown if shown not in ('', []) else repr(shown)}.")
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        above = f"greater than {low}" if schema.get("exclusiveMinimum") else f"at least {low}"
        below = f"less than {high}" if schema.get("exclusiveMaximum") else f"at most {high}"
        bounds = [b for b, v in ((above, low), (below, high)) if v is not None]
        notes.append(f"{' and '.join(bounds).capitalize()}.")
    if "enum" in schema:
        notes.append(f"One of: {', '.join(str(v) for v in schema['enum'])}.")
    if "maxLength" in schema:
        notes.append(f"At most {schema['maxLength']} characters.")
    if "maxItems" in schema:
        notes.append(f"At most {schema['maxItems']} items.")
    if not notes or description.endswith(" ".join(notes)):
        return description
    return f"{description.rstrip()} {' '.join(notes)}"


def llmserve_crd() -> JsonSchema:
    """The LLMServe CRD, with status and scale subresources and printer columns."""
    spec = structural_schema(llmserve_api.LLMServeSpec)
    spec["x-kubernetes-validations"] = [rule.to_validation() for rule in llmserve_api.SPEC_RULES]
    status = structural_schema(llmserve_api.LLMServeStatus)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    schema = {
        "type": "object",
        "description": llmserve_api.LLMServe.__doc__,
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": "size(self.metadata.name) <= 63",
                "message": "metadata.name must be at most 63 characters: it becomes a label value",
            },
            {
                # The Service and the pods' DNS names are built from it; a dot (llama-3.1-8b) would be
                # accepted here and refused later, leaving a model the gateway cannot reach.
                "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name must be a DNS label: lowercase letters, digits and '-', starting and "
                "ending with a letter or digit, no dots (it names the model's Service); e.g. llama-3-1-8b",
            },
        ],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    ready = '.status.conditions[?(@.type=="Ready")]'
    columns = [
        ("Model", "string", ".spec.model.name", 0),
        ("Desired", "integer", ".status.desiredReplicas", 0),
        ("Ready", "integer", ".status.readyReplicas", 0),
        ("Status", "string", f"{ready}.reason", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Served", "string", ".status.servedModelName", 1),
        ("Engine", "string", ".spec.engine.kind", 1),
        ("GPUs", "integer", ".spec.resources.gpus", 1),
        ("Unschedulable", "integer", ".status.unschedulableReplicas", 1),
        ("Queue", "number", ".status.autoscaling.queueDepthPerReplica", 1),
        ("KV", "number", ".status.autoscaling.kvCacheUtilization", 1),
        ("Message", "string", f"{ready}.message", 1),
        ("Local", "integer", ".status.burst.localReadyReplicas", 1),
        ("Burst", "integer", ".status.burst.replicas", 1),
        ("BurstReady", "integer", ".status.burst.readyReplicas", 1),
        ("Rented-USD", "number", ".status.burst.spentThisMonthUsd", 1),
        ("USD/Mtok", "number", ".status.cost.usdPerMillionOutputTokens", 1),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{llmserve_api.PLURAL}.{llmserve_api.GROUP}"},
        "spec": {
            "group": llmserve_api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": llmserve_api.KIND,
                "listKind": f"{llmserve_api.KIND}List",
                "plural": llmserve_api.PLURAL,
                "singular": llmserve_api.SINGULAR,
                "shortNames": llmserve_api.SHORT_NAMES,
                "categories": ["llmserve", "all"],
            },
            "versions": [
                {
                    "name": llmserve_api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": n, "type": t, "jsonPath": p, **({"priority": pr} if pr else {})}
                        for n, t, p, pr in columns
                    ],
                }
            ],
        },
    }


def burstpool_crd() -> JsonSchema:
    """The cluster-scoped BurstPool CRD, with a status subresource and money columns."""
    spec = structural_schema(burstpool_api.BurstPoolSpec)
    spec["x-kubernetes-validations"] = [rule.to_validation() for rule in burstpool_api.POOL_RULES]
    status = structural_schema(burstpool_api.BurstPoolStatus)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    schema = {
        "type": "object",
        "description": burstpool_api.BurstPool.__doc__,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    ready = '.status.conditions[?(@.type=="Ready")]'
    columns = [
        ("Provider", "string", ".spec.provider", 0),
        ("Instances", "integer", ".status.instanceCount", 0),
        ("Ready", "integer", ".status.readyInstances", 0),
        ("USD/h", "number", ".status.burnRateUsdPerHour", 0),
        ("Spent", "number", ".status.spentThisMonthUsd", 0),
        ("Budget", "number", ".spec.monthlyBudget", 0),
        ("Status", "string", f"{ready}.reason", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Max-USD/h", "number", ".spec.maxHourlySpend", 1),
        ("Message", "string", f"{ready}.message", 1),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{burstpool_api.PLURAL}.{llmserve_api.GROUP}"},
        "spec": {
            "group": llmserve_api.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": burstpool_api.KIND,
                "listKind": f"{burstpool_api.KIND}List",
                "plural": burstpool_api.PLURAL,
                "singular": burstpool_api.SINGULAR,
                "shortNames": burstpool_api.SHORT_NAMES,
                # No "llmserve" category: it is also LLMServe's singular name, and a category spanning two
                # kinds makes `kubectl get llmserve NAME` fail with "you must specify only one resource".
            },
            "versions": [
                {
                    "name": llmserve_api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": n, "type": t, "jsonPath": p, **({"priority": pr} if pr else {})}
                        for n, t, p, pr in columns
                    ],
                }
            ],
        },
    }


def all_crds() -> list[JsonSchema]:
    return [llmserve_crd(), burstpool_crd()]


def render_yaml(crd: JsonSchema) -> str:
    header = "# Generated by `llmserve crds` from operator/llmserve/api. Do not edit.\n"
    return header + yaml.safe_dump(copy.deepcopy(crd), sort_keys=False, width=110)


def crd_filename(crd: JsonSchema) -> str:
    return f"{crd['metadata']['name']}.yaml"


def write_crds(output_dir: str | None) -> int:
    """Print every CRD, or write each to OUTPUT_DIR/<name>.yaml."""
    for crd in all_crds():
        text = render_yaml(crd)
        if output_dir is None:
            sys.stdout.write("---\n" + text)
        else:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / crd_filename(crd)).write_text(text)
    return 0
