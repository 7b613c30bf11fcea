"""Derives an LLMServe's status and conditions from its Deployment, pods and Service (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from llmserve.api.base import Condition, now_utc
from llmserve.pods import PodSummary, summarize_pods

__all__ = [
    "Observed",
    "PodSummary",
    "compute_conditions",
    "deployment_problem",
    "merge_conditions",
    "service_problem",
    "summarize_pods",
]

Obj = dict[str, Any]
ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass
class Observed:
    """Inputs to the conditions, gathered by the controller."""

    generation: int
    desired_replicas: int
    pods: PodSummary
    deployment: Obj | None
    spec_error: str = ""
    apply_error: str = ""
    # What keeps the Service from carrying requests to the ready pods ("" when it stands): the gateway
    # and in-cluster clients reach the model only through it, so ready pods alone are not Ready.
    service_problem: str = ""
    # The same for the Deployment: without it no replica is kept or started (the garbage collector removes
    # the ones it had), whatever the pods say this instant.
    deployment_problem: str = ""
    # Why a deleted Deployment or Service could not be applied again yet; the operator keeps trying.
    restore_error: str = ""


def child_problem(kind: str, name: str, child: Obj | None) -> str:
    """Why one of the LLMServe's children does not stand: missing, or on its way out ("" when it stands)."""
    if child is None:
        return f"{kind} {name} does not exist"
    if child.get("metadata", {}).get("deletionTimestamp"):
        return f"{kind} {name} is being deleted"
    return ""


def service_problem(name: str, service: Obj | None) -> str:
    """Why the LLMServe's Service cannot carry requests ("" when it stands)."""
    return child_problem("Service", name, service)


def deployment_problem(name: str, deployment: Obj | None) -> str:
    """Why the LLMServe's Deployment cannot keep its replicas ("" when it stands)."""
    return child_problem("Deployment", name, deployment)


def deployment_failure(deployment: Obj | None) -> str:
    """The Deployment's ReplicaFailure message (e.g. a ResourceQuota refusing the pods), if any."""
    for cond in (deployment or {}).get("status", {}).get("conditions", []):
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return str(cond.get("message") or cond.get("reason") or "ReplicaFailure")
    return ""


def _condition(type_: str, status: ConditionStatus, reason: str, message: str, generation: int) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now_utc(),
        observed_generation=generation,
    )


def _deployment_rolling(deployment: Obj | None, generation_seen: bool) -> bool:
    if deployment is None:
        return True
    status = deployment.get("status", {})
    spec_replicas = deployment.get("spec", {}).get("replicas", 0)
    if not generation_seen:
        return True
    return bool(status.get("updatedReplicas", 0) < spec_replicas or status.get("replicas", 0) > spec_replicas)


def compute_conditions(observed: Observed) -> list[Condition]:
    """Ready, Progressing and Degraded, each with one reason a user can act on."""
    gen, pods, desired = observed.generation, observed.pods, observed.desired_replicas
    deployment = observed.deployment
    # Only a Deployment the operator would apply counts as missing: with an invalid spec it renders none,
    # and a refused apply has its own reason (which says why it is missing).
    missing_deployment = "" if observed.spec_error or observed.apply_error else observed.deployment_problem
    dep_gen_seen = deployment is not None and deployment.get("status", {}).get(
        "observedGeneration", 0
    ) >= deployment.get("metadata", {}).get("generation", 0)

    if observed.spec_error:
        degraded = _condition("Degraded", "True", "InvalidSpec", observed.spec_error, gen)
    elif observed.apply_error:
        degraded = _condition("Degraded", "True", "ApplyFailed", observed.apply_error, gen)
    elif observed.restore_error:
        degraded = _condition("Degraded", "True", "RestoreFailed", observed.restore_error, gen)
    elif pods.unschedulable:
        message = f"{pods.unschedulable} replica(s) cannot be scheduled: {pods.unschedulable_message}"
        degraded = _condition("Degraded", "True", "Unschedulable", message, gen)
    elif pods.stuck:
        message = f"{pods.stuck} replica(s) cannot start: {pods.stuck_message}"
        degraded = _condition("Degraded", "True", "ReplicaFailure", message, gen)
    elif failure := deployment_failure(deployment):
        degraded = _condition(
            "Degraded", "True", "ReplicaFailure", f"replicas cannot be created: {failure}", gen
        )
    else:
        degraded = _condition("Degraded", "False", "AsExpected", "", gen)

    if missing_deployment:
        # Before ScaledToZero too: at zero replicas the Deployment is still what a wake scales, and
        # "scaled to zero" would hide that it is gone.
        message = (
            f"{missing_deployment}: {pods.ready}/{desired} replicas ready, and no replica is kept or "
            "started until the operator applies it again"
        ) + (f"; {observed.restore_error}" if observed.restore_error else "")
        ready = _condition("Ready", "False", "DeploymentMissing", message, gen)
    elif pods.ready == 0 and (observed.spec_error or observed.apply_error):
        # Before ScaledToZero: an invalid spec has no desired replicas (nothing renders), and a refused
        # apply may leave none, but "scaled to zero" would hide the field the user must fix.
        ready = _condition("Ready", "False", degraded.reason, degraded.message, gen)
    elif desired == 0 and pods.total == 0:
        ready = _condition(
            "Ready", "False", "ScaledToZero", "no replicas are running; requests wake the model", gen
        )
    elif pods.ready > 0 and observed.service_problem:
        message = (
            f"{pods.ready}/{desired} replicas ready, but {observed.service_problem}: no request reaches them "
            "until the operator applies it again"
        ) + (f"; {observed.restore_error}" if observed.restore_error else "")
        ready = _condition("Ready", "False", "ServiceMissing", message, gen)
    elif pods.ready >= desired and pods.ready > 0:
        ready = _condition("Ready", "True", "Available", f"{pods.ready}/{desired} replicas ready", gen)
    elif pods.ready > 0:
        ready = _condition(
            "Ready", "True", "PartiallyAvailable", f"{pods.ready}/{desired} replicas ready", gen
        )
    elif degraded.status == "True":
        ready = _condition("Ready", "False", degraded.reason, degraded.message, gen)
    else:
        ready = _condition(
            "Ready", "False", "Starting", f"0/{desired} replicas ready; loading the model", gen
        )

    if observed.spec_error or observed.apply_error:
        progressing = _condition("Progressing", "False", degraded.reason, degraded.message, gen)
    elif observed.restore_error:
        # True: the operator is still at it (a retry with backoff), unlike a refused spec change.
        progressing = _condition("Progressing", "True", "RestoreRetrying", observed.restore_error, gen)
    elif missing_deployment:
        message = f"{missing_deployment}; the operator applies it again"
        progressing = _condition("Progressing", "True", "DeploymentMissing", message, gen)
    elif _deployment_rolling(deployment, dep_gen_seen):
        progressing = _condition("Progressing", "True", "RollingUpdate", "replicas are being replaced", gen)
    elif pods.ready < desired:
        waiting = desired - pods.ready
        progressing = _condition(
            "Progressing", "True", "ReplicasStarting", f"waiting for {waiting} replica(s)", gen
        )
    elif pods.total > desired:
        progressing = _condition(
            "Progressing", "True", "ScalingDown", f"{pods.total - desired} replica(s) stopping", gen
        )
    else:
        progressing = _condition("Progressing", "False", "Stable", "all replicas are up to date", gen)
    return [ready, progressing, degraded]


def merge_conditions(previous: list[Condition], current: list[Condition]) -> list[Condition]:
    """`current`, keeping lastTransitionTime from the previous condition of a type whose status did not change."""
    by_type = {c.type: c for c in previous}
    merged: list[Condition] = []
    for condition in current:
        before = by_type.get(condition.type)
        if before is not None and before.status == condition.status:
            condition = condition.model_copy(update={"last_transition_time": before.last_transition_time})
        merged.append(condition)
    # Conditions of other types belong to other writers (autoscaler, burst): each applies its own.
    return merged


def transition_time(condition: Condition) -> datetime:
    return condition.last_transition_time
