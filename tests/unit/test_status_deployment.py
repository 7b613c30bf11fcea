"""Ready and Progressing name the LLMServe's Deployment while it is missing or being deleted (pure)."""

from typing import Any

from llmserve.api.base import Condition
from llmserve.controller.reconcile import Reconciler
from llmserve.controller.status import Observed, compute_conditions, deployment_problem, summarize_pods


def _ready_pod() -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True"}]
    return {"metadata": {}, "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": conditions}}


def _deployment(replicas: int, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "llama", "generation": 1}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas},
    }


def _conditions(
    desired: int,
    ready_pods: int,
    deployment: dict[str, Any] | None,
    spec_error: str = "",
    apply_error: str = "",
) -> dict[str, Condition]:
    observed = Observed(
        generation=3,
        desired_replicas=desired,
        pods=summarize_pods([_ready_pod() for _ in range(ready_pods)]),
        deployment=deployment,
        spec_error=spec_error,
        apply_error=apply_error,
        deployment_problem=deployment_problem("llama", deployment),
    )
    return {c.type: c for c in compute_conditions(observed)}


def test_a_missing_deployment_is_not_ready_and_is_progressing_naming_the_deployment() -> None:
    c = _conditions(2, 0, None)
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "DeploymentMissing")
    assert c["Ready"].message.startswith("Deployment llama does not exist: 0/2 replicas ready")
    assert (c["Progressing"].status, c["Progressing"].reason) == ("True", "DeploymentMissing")
    assert c["Progressing"].message == "Deployment llama does not exist; the operator applies it again"
    assert (c["Degraded"].status, c["Degraded"].reason) == ("False", "AsExpected")


def test_ready_pods_of_a_deployment_being_deleted_are_not_ready_they_go_with_it() -> None:
    c = _conditions(1, 1, _deployment(1, deleting=True))
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "DeploymentMissing")
    assert c["Ready"].message.startswith("Deployment llama is being deleted: 1/1 replicas ready")
    assert c["Progressing"].reason == "DeploymentMissing"


def test_a_model_scaled_to_zero_still_needs_its_deployment() -> None:
    assert _conditions(0, 0, None)["Ready"].reason == "DeploymentMissing"
    assert _conditions(0, 0, _deployment(0))["Ready"].reason == "ScaledToZero"


def test_a_standing_deployment_leaves_the_conditions_to_the_pods() -> None:
    c = _conditions(2, 2, _deployment(2))
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "Available")
    assert (c["Progressing"].status, c["Progressing"].reason) == ("False", "Stable")
    assert deployment_problem("llama", _deployment(2)) == ""


def test_an_invalid_spec_or_a_refused_apply_says_why_the_deployment_is_missing() -> None:
    # The operator renders nothing for an invalid spec, and a refused apply names the refusal: "missing"
    # would hide the reason a user must act on. (An invalid spec has no desired replicas.)
    error = "spec.resources.gpus: bad"
    invalid = _conditions(0, 0, None, spec_error=error)
    with_deployment = _conditions(0, 0, _deployment(0), spec_error=error)
    assert [c.reason for c in invalid.values()] == [c.reason for c in with_deployment.values()]
    assert (invalid["Progressing"].reason, invalid["Degraded"].reason) == ("InvalidSpec", "InvalidSpec")
    refused = _conditions(1, 0, None, apply_error="applying Deployment llama failed: forbidden")
    assert (refused["Ready"].reason, refused["Progressing"].reason) == ("ApplyFailed", "ApplyFailed")


def _llmserve(status: dict[str, Any]) -> dict[str, Any]:
    spec = {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, "engine": {"kind": "simulator"}}
    meta = {"name": "llama", "namespace": "default", "uid": "u1", "generation": 1}
    return {"metadata": meta, "spec": {**spec, "resources": {"gpus": 0}}, "status": status}


def test_a_new_llmserves_deployment_not_yet_seen_is_being_created_not_missing() -> None:
    # Its first status can be computed before the watch brings the Deployment just applied; another
    # writer's condition (here the fit check's) does not make it an old one.
    reconciler = Reconciler()
    service = {"metadata": {"name": "llama"}}
    when = "2026-12-01T00:00:00Z"
    fit = {"type": "CapacityFit", "status": "True", "reason": "Fits", "lastTransitionTime": when}
    fresh = _llmserve({"conditions": [fit]})
    first = {c.type: c for c in reconciler.compute_status(fresh, None, [], service).conditions}
    assert (first["Ready"].reason, first["Progressing"].reason) == ("Starting", "RollingUpdate")
    # Once the reconciler has reported Ready, an absent Deployment is missing.
    ready = {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": when}
    reported = _llmserve({"conditions": [fit, ready]})
    later = {c.type: c for c in reconciler.compute_status(reported, None, [], service).conditions}
    assert (later["Ready"].reason, later["Progressing"].reason) == ("DeploymentMissing", "DeploymentMissing")
