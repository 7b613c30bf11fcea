"""Counts an LLMServe's pods by state (ready, starting, unschedulable, stuck): pure, read by the
reconciler's status, the autoscaler and the burst controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

# Container waiting reasons that mean the replica will not come up without a change.
_STUCK_WAITING_REASONS = {
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
}  # fmt: skip


@dataclass
class PodSummary:
    """What the status needs to know about an LLMServe's pods."""

    total: int = 0
    ready: int = 0
    unschedulable: int = 0
    unschedulable_message: str = ""
    stuck: int = 0
    stuck_message: str = ""
    starting: int = 0
    ready_pod_ips: list[str] = field(default_factory=list)


def summarize_pods(pods: list[Obj]) -> PodSummary:
    summary = PodSummary()
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue  # terminating pods are neither capacity nor a problem
        status = pod.get("status", {})
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        summary.total += 1
        conditions = {c.get("type"): c for c in status.get("conditions", [])}
        scheduled = conditions.get("PodScheduled", {})
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            summary.unschedulable += 1
            summary.unschedulable_message = summary.unschedulable_message or scheduled.get("message", "")
            continue
        if conditions.get("Ready", {}).get("status") == "True":
            summary.ready += 1
            if status.get("podIP"):
                summary.ready_pod_ips.append(status["podIP"])
            continue
        stuck = _stuck_reason(status)
        if stuck:
            summary.stuck += 1
            summary.stuck_message = summary.stuck_message or stuck
        else:
            summary.starting += 1
    return summary


def _stuck_reason(pod_status: Obj) -> str:
    for container in pod_status.get("containerStatuses", []):
        waiting = container.get("state", {}).get("waiting", {})
        if waiting.get("reason") in _STUCK_WAITING_REASONS:
            return f"container {container.get('name')}: {waiting['reason']}: {waiting.get('message', '')}".strip()
    return ""
