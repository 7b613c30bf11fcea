"""The operator's lean diff-base builds exactly kopf's essence, without copying status and managedFields."""

from __future__ import annotations

import copy
import json

import kopf

from llmserve.api.llmserve import GROUP
from llmserve.controller.main import LeanDiffBaseStorage

LAST_HANDLED = f"{GROUP}/last-handled-configuration"


def llmserve_body() -> dict[str, object]:
    return {
        "apiVersion": "llmserve.dev/v1alpha1",
        "kind": "LLMServe",
        "metadata": {
            "name": "llama",
            "namespace": "ai",
            "uid": "0b8f",
            "generation": 3,
            "resourceVersion": "12345",
            "labels": {"team": "search"},
            "annotations": {
                "note": "kept",
                LAST_HANDLED: json.dumps({"spec": {"replicas": {"min": 1}}}),
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
            "finalizers": [f"{GROUP}/finalizer"],
            "managedFields": [{"manager": f"llmserve-{n}", "fieldsV1": {"f:status": {}}} for n in range(5)],
        },
        "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, "replicas": {"min": 1, "max": 4}},
        "status": {"readyReplicas": 1, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_the_essence_is_the_same_as_kopfs() -> None:
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    lean = LeanDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    raw = llmserve_body()
    expected = kopfs.build(body=kopf.Body(copy.deepcopy(raw)))
    assert lean.build(body=kopf.Body(raw)) == expected
    assert expected == {
        "spec": raw["spec"],
        "metadata": {"labels": {"team": "search"}, "annotations": {"note": "kept"}},
    }


def test_the_essence_is_a_copy_that_later_changes_do_not_reach() -> None:
    raw = llmserve_body()
    essence = LeanDiffBaseStorage(prefix=GROUP, key="last-handled-configuration").build(body=kopf.Body(raw))
    raw["spec"]["replicas"]["max"] = 8  # type: ignore[index]
    raw["metadata"]["labels"]["team"] = "ads"  # type: ignore[index]
    assert essence["spec"]["replicas"]["max"] == 4
    assert essence["metadata"]["labels"]["team"] == "search"


def test_status_fields_asked_for_by_a_handler_are_kept() -> None:
    lean = LeanDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    essence = lean.build(body=kopf.Body(llmserve_body()), extra_fields=["status.readyReplicas"])
    assert essence["status"] == {"readyReplicas": 1}
