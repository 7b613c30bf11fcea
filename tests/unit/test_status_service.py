"""Ready follows the LLMServe's Service: ready pods behind a missing Service answer no one (pure)."""

from typing import Any

from llmserve.api.base import Condition
from llmserve.controller.status import Observed, compute_conditions, service_problem, summarize_pods


def _ready_pod() -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True"}]
    return {"metadata": {}, "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": conditions}}


def _deployment(replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas},
    }


def _ready(desired: int, ready_pods: int, service: dict[str, Any] | None) -> Condition:
    observed = Observed(
        generation=4,
        desired_replicas=desired,
        pods=summarize_pods([_ready_pod() for _ in range(ready_pods)]),
        deployment=_deployment(desired),
        service_problem=service_problem("llama", service),
    )
    return next(c for c in compute_conditions(observed) if c.type == "Ready")


def test_ready_pods_without_their_service_are_not_ready_and_the_message_names_the_service() -> None:
    ready = _ready(2, 2, None)
    assert (ready.status, ready.reason) == ("False", "ServiceMissing")
    assert ready.message.startswith("2/2 replicas ready, but Service llama does not exist")


def test_a_service_being_deleted_is_not_ready_either() -> None:
    deleting = {"metadata": {"name": "llama", "deletionTimestamp": "2026-12-01T00:00:00Z"}}
    ready = _ready(1, 1, deleting)
    assert (ready.status, ready.reason) == ("False", "ServiceMissing")
    assert "Service llama is being deleted" in ready.message


def test_ready_pods_behind_their_service_are_ready() -> None:
    service = {"metadata": {"name": "llama"}}
    assert (_ready(2, 2, service).status, _ready(2, 2, service).reason) == ("True", "Available")
    assert (_ready(2, 1, service).status, _ready(2, 1, service).reason) == ("True", "PartiallyAvailable")


def test_without_ready_pods_the_reason_stays_what_the_pods_say() -> None:
    # Scaled to zero or still loading: the Service is not what keeps the model from answering.
    assert _ready(0, 0, None).reason == "ScaledToZero"
    assert _ready(1, 0, None).reason == "Starting"
