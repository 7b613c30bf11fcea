"""The CRD is generated from the models, structural, and committed up to date."""

from pathlib import Path
from typing import Any

import yaml

from llmserve.api.crd import all_crds, crd_filename, llmserve_crd, render_yaml

REPO = Path(__file__).resolve().parents[2]


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def test_committed_crds_match_the_models() -> None:
    for crd in all_crds():
        committed = (REPO / "crds" / crd_filename(crd)).read_text()
        assert committed == render_yaml(crd), "crds/ is stale: run `llmserve crds --output-dir crds`"


def test_chart_carries_the_same_crds() -> None:
    for crd in all_crds():
        chart_copy = REPO / "charts" / "llmserve" / "crds" / crd_filename(crd)
        assert chart_copy.read_text() == render_yaml(crd), "chart CRDs are stale: run `make crds`"


def test_schema_is_structural() -> None:
    schema = llmserve_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & set(node), node
        if "properties" in node:
            assert node["type"] == "object"


def test_every_spec_field_is_described_for_kubectl_explain() -> None:
    spec = llmserve_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for node in _walk(spec):
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{name} has no description"


def test_scale_subresource_and_columns() -> None:
    version = llmserve_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert names == ["Model", "Desired", "Ready", "Status", "Age"]


def test_cross_field_rules_are_cel() -> None:
    spec = llmserve_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {v["fieldPath"] for v in spec["x-kubernetes-validations"]}
    assert {".minReplicas", ".replicas", ".resources.gpus"} <= rules


def test_yaml_round_trips() -> None:
    crd = llmserve_crd()
    assert yaml.safe_load(render_yaml(crd)) == crd


def test_optional_field_with_exclusive_bound_keeps_a_numeric_minimum() -> None:
    from pydantic import BaseModel, Field

    from llmserve.api.crd import structural_schema

    class Probe(BaseModel):
        share: float | None = Field(default=None, gt=0, le=1, description="A share.")

    prop = structural_schema(Probe)["properties"]["share"]
    assert prop == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "description": "A share. Greater than 0 and at most 1.",
    }


def test_kubectl_explain_shows_defaults_and_bounds() -> None:
    spec = llmserve_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    gpus = spec["properties"]["resources"]["properties"]["gpus"]["description"]
    assert gpus.endswith("Default: 1. At least 0 and at most 16.")
    kind = spec["properties"]["engine"]["properties"]["kind"]["description"]
    assert "One of: vllm, simulator." in kind
    ratio = spec["properties"]["autoscaling"]["properties"]["batchSlotsTarget"]["description"]
    assert ratio.endswith("At least 0.1 and at most 1.")  # an optional field keeps its bounds too


def test_a_name_kubernetes_would_refuse_for_the_service_is_refused_by_cel() -> None:
    rules = llmserve_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    assert any("metadata.name.matches" in r["rule"] and "no dots" in r["message"] for r in rules)
