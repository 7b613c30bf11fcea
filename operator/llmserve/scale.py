"""Writes an LLMServe's desired replica count through its scale subresource, as `kubectl scale` does,
clamped to the spec's bounds: the one writer of /scale (the autoscaler's rescale, the gateway's
wake-from-zero)."""

from __future__ import annotations

from llmserve import kube
from llmserve.api.llmserve import KIND, LLMServeSpec


def clamp_replicas(replicas: int, spec: LLMServeSpec) -> int:
    """Within spec.minReplicas..spec.maxReplicas, which the CRD's CEL rule also demands of spec.replicas."""
    return min(max(replicas, spec.min_replicas), spec.max_replicas)


async def write_replicas(
    namespace: str, name: str, replicas: int, spec: LLMServeSpec, attempts: int = 3
) -> int:
    """Writes the clamped count (retrying outages with backoff) and returns it; raises kube.KubeError."""
    clamped = clamp_replicas(replicas, spec)
    await kube.retry(lambda: kube.scale(KIND, namespace, name, clamped), attempts=attempts)
    return clamped
