"""The pure mapping from an LLMServe's spec to the autoscaling policy's settings (no kopf, no I/O:
benchmarks and the plan CLI import it without registering the operator's handlers)."""

from __future__ import annotations

from llmserve.api.engine_args import batch_slots
from llmserve.api.llmserve import LLMServeSpec
from llmserve.autoscale.policy import PolicyConfig


def policy_config(spec: LLMServeSpec) -> PolicyConfig:
    scaling = spec.autoscaling
    return PolicyConfig(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        queue_depth_target=scaling.queue_depth_target,
        kv_cache_target=scaling.kv_cache_target,
        tolerance=scaling.tolerance,
        scale_up_max_step=scaling.scale_up_max_step,
        scale_down_delay_seconds=scaling.scale_down_delay_seconds,
        scale_to_zero_idle_seconds=scaling.scale_to_zero_idle_seconds,
        batch_slots_per_replica=batch_slots(spec),
        batch_slots_target=scaling.effective_batch_slots_target,
    )
