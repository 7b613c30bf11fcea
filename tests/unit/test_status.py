"""Ready / Progressing / Degraded derived from the children."""

from datetime import UTC, datetime
from typing import Any

from llmserve.api.base import Condition
from llmserve.controller.status import Observed, compute_conditions, merge_conditions, summarize_pods


def _pod(
    ready: bool = False, unschedulable: str = "", waiting: str = "", deleting: bool = False
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    statuses = [{"name": "engine", "state": {"waiting": {"reason": waiting}}}] if waiting else []
    meta = {"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {}
    return {
        "metadata": meta,
        "status": {
            "phase": "Running" if ready else "Pending",
            "podIP": "10.0.0.1",
            "conditions": conditions,
            "containerStatuses": statuses,
        },
    }


def _deployment(replicas: int, updated: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
        },
    }


def _by_type(conditions: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conditions}


def test_all_replicas_ready_is_ready_and_stable() -> None:
    pods = summarize_pods([_pod(ready=True), _pod(ready=True)])
    c = _by_type(compute_conditions(Observed(3, 2, pods, _deployment(2))))
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "Available")
    assert (c["Progressing"].status, c["Degraded"].status) == ("False", "False")
    assert c["Ready"].observed_generation == 3


def test_unschedulable_pods_degrade_with_the_schedulers_reason() -> None:
    message = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    pods = summarize_pods([_pod(unschedulable=message)])
    c = _by_type(compute_conditions(Observed(1, 1, pods, _deployment(1))))
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in c["Degraded"].message
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "Unschedulable")
    assert pods.unschedulable == 1


def test_partially_ready_still_serves_while_progressing() -> None:
    pods = summarize_pods([_pod(ready=True), _pod()])
    c = _by_type(compute_conditions(Observed(1, 2, pods, _deployment(2))))
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "PartiallyAvailable")
    assert (c["Progressing"].status, c["Progressing"].reason) == ("True", "ReplicasStarting")


def test_crash_looping_replica_is_degraded() -> None:
    pods = summarize_pods([_pod(waiting="CrashLoopBackOff")])
    c = _by_type(compute_conditions(Observed(1, 1, pods, _deployment(1))))
    assert c["Degraded"].reason == "ReplicaFailure"


def test_invalid_spec_is_degraded_not_progressing() -> None:
    c = _by_type(compute_conditions(Observed(1, 0, summarize_pods([]), None, spec_error="spec.x: bad")))
    assert (c["Degraded"].reason, c["Progressing"].status) == ("InvalidSpec", "False")


def test_rollout_in_progress_is_progressing() -> None:
    pods = summarize_pods([_pod(ready=True)])
    c = _by_type(compute_conditions(Observed(1, 1, pods, _deployment(1, updated=0))))
    assert c["Progressing"].reason == "RollingUpdate"


def test_scaled_to_zero_is_reported_as_such() -> None:
    c = _by_type(compute_conditions(Observed(1, 0, summarize_pods([]), _deployment(0))))
    assert c["Ready"].reason == "ScaledToZero"


def test_terminating_pods_are_not_counted() -> None:
    pods = summarize_pods([_pod(ready=True, deleting=True)])
    assert pods.total == 0 and pods.ready == 0


def test_transition_time_is_kept_while_status_is_unchanged() -> None:
    earlier = datetime(2026, 1, 1, tzinfo=UTC)
    previous = [
        Condition(type="Ready", status="True", reason="Available", last_transition_time=earlier),
        Condition(type="AbleToScale", status="True", reason="Ok", last_transition_time=earlier),
    ]
    current = compute_conditions(Observed(1, 1, summarize_pods([_pod(ready=True)]), _deployment(1)))
    merged = _by_type(merge_conditions(previous, current))
    assert merged["Ready"].last_transition_time == earlier
    assert merged["Degraded"].last_transition_time != earlier
    assert "AbleToScale" not in merged  # the autoscaler applies its own conditions; never carried here


def test_an_invalid_spec_with_no_replicas_is_not_ready_for_the_invalid_field_not_scaled_to_zero() -> None:
    # An invalid spec renders nothing, so it has no desired replicas and no pods: "scaled to zero" would
    # hide the field the user must fix.
    error = "spec.modelCache.mountPath: must not be /dev/shm"
    c = _by_type(compute_conditions(Observed(1, 0, summarize_pods([]), None, spec_error=error)))
    assert (c["Ready"].status, c["Ready"].reason, c["Ready"].message) == ("False", "InvalidSpec", error)


def test_a_refused_apply_at_zero_replicas_is_not_ready_for_the_refusal_not_scaled_to_zero() -> None:
    error = "applying Deployment llama failed: forbidden"
    c = _by_type(compute_conditions(Observed(1, 0, summarize_pods([]), _deployment(0), apply_error=error)))
    assert (c["Ready"].status, c["Ready"].reason, c["Ready"].message) == ("False", "ApplyFailed", error)


def test_an_invalid_spec_whose_old_replicas_still_serve_stays_ready() -> None:
    pods = summarize_pods([_pod(ready=True)])
    c = _by_type(compute_conditions(Observed(1, 0, pods, _deployment(1), spec_error="spec.x: bad")))
    assert (c["Ready"].status, c["Degraded"].reason) == ("True", "InvalidSpec")
