"""The status writer's pure parts: the apply configuration, the skip check and condition transition times."""

from __future__ import annotations

from llmserve.controller.status_writer import (
    already_applied,
    conditions_with_transition_times,
    status_apply_manifest,
)

OLD = "2024-01-01T00:00:00Z"
NEW = "2025-01-01T00:00:00Z"


def cond(type_: str, status: str, time: str = NEW, **extra: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": "R", "lastTransitionTime": time, **extra}


def test_the_apply_configuration_names_the_object_and_leaves_nulls_out() -> None:
    manifest = status_apply_manifest("llama", "ai", {"readyReplicas": 1, "endpoint": None})
    assert manifest == {
        "apiVersion": "llmserve.dev/v1alpha1",
        "kind": "LLMServe",
        "metadata": {"name": "llama", "namespace": "ai"},
        "status": {"readyReplicas": 1},
    }


def test_a_fragment_already_stored_is_not_written_again_whatever_other_writers_hold() -> None:
    stored = {
        "readyReplicas": 2,
        "conditions": [cond("ScalingActive", "True"), cond("Ready", "True")],
        "autoscaling": {"desiredReplicas": 2, "lastScaleTime": OLD},
    }
    assert already_applied(stored, {"readyReplicas": 2, "conditions": [cond("Ready", "True")]})
    assert not already_applied(stored, {"readyReplicas": 3, "conditions": [cond("Ready", "True")]})
    assert not already_applied(stored, {"conditions": [cond("Ready", "False")]})
    assert not already_applied(stored, {"conditions": [cond("Bursting", "True")]})
    assert not already_applied(None, {"readyReplicas": 0})
    assert already_applied(stored, {"autoscaling": {"desiredReplicas": 2}})


def test_transition_times_are_kept_only_while_the_status_of_that_condition_is_unchanged() -> None:
    stored = [cond("Ready", "True", OLD), cond("Degraded", "False", OLD), cond("ScalingActive", "True", OLD)]
    ours = [cond("Ready", "True"), cond("Degraded", "True"), cond("Progressing", "False")]
    merged = {c["type"]: c for c in conditions_with_transition_times(stored, ours)}
    assert merged["Ready"]["lastTransitionTime"] == OLD
    assert merged["Degraded"]["lastTransitionTime"] == NEW
    assert merged["Progressing"]["lastTransitionTime"] == NEW
    assert "ScalingActive" not in merged  # another writer's condition is never written by us
