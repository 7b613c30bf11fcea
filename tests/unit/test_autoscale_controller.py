"""The autoscaler's glue between the API and the pure policy: persisted memory, conditions, settings."""

from __future__ import annotations

from dataclasses import replace

from llmserve.api.base import Condition
from llmserve.api.engine_args import batch_slots
from llmserve.api.llmserve import LLMServeSpec
from llmserve.autoscale.policy import History, PolicyConfig, ReplicaMetrics, Snapshot, decide
from llmserve.autoscale.spec import policy_config
from llmserve.autoscale.state import decision_conditions, history_from_status, scale_status
from llmserve.controller.autoscaling import ready_targets, status_fragment

T0 = 1_700_000_000.0


def spec(**fields: object) -> LLMServeSpec:
    return LLMServeSpec.model_validate({"model": {"name": "m"}, "engine": {"kind": "simulator"}, **fields})


def test_the_stabilization_window_survives_a_round_trip_through_status() -> None:
    config = PolicyConfig(min_replicas=1, max_replicas=8)
    busy = Snapshot(T0, 2, 2, replicas=(ReplicaMetrics(12, 4, 0.2), ReplicaMetrics(12, 4, 0.2)))
    decision = decide(busy, config, History(last_desired_replicas=2))
    status = scale_status(decision, 2, None, None).model_dump(by_alias=True, mode="json")

    restored = history_from_status(status)  # what a restarted operator reads back
    # The ready count is not persisted: a restarted operator starts counting at its first decision.
    assert restored == replace(decision.history, last_ready_replicas=None)
    quiet = Snapshot(T0 + 60, 6, 6, replicas=tuple(ReplicaMetrics(0, 0, 0.0) for _ in range(6)))
    assert decide(quiet, config, restored).desired_replicas == 6
    assert decide(quiet, config, History(last_desired_replicas=6)).desired_replicas == 1  # forgotten: early


def test_status_from_an_older_operator_or_a_hand_edit_still_loads() -> None:
    history = history_from_status(
        {"recommendations": [{"replicas": 3, "time": "not a time"}], "desiredReplicas": 2}
    )
    assert history == History(last_desired_replicas=2)
    assert history_from_status(None) == History()


def test_the_autoscaler_applies_only_its_own_conditions_keeping_unchanged_transition_times() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}  # fmt: skip
    old_active = {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "message": "x",
                  "lastTransitionTime": "2024-01-01T00:00:00Z"}  # fmt: skip
    new_active = Condition.model_validate(
        {**old_active, "message": "y", "lastTransitionTime": "2025-01-01T00:00:00Z"}
    )
    limited = Condition.model_validate({"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange",
                                        "lastTransitionTime": "2025-01-01T00:00:00Z"})  # fmt: skip
    fragment = status_fragment(
        {"conditions": [ready, old_active]}, {"desiredReplicas": 2}, [new_active, limited]
    )
    assert [c["type"] for c in fragment["conditions"]] == ["ScalingActive", "ScalingLimited"]  # never Ready
    assert fragment["conditions"][0]["message"] == "y"
    assert fragment["conditions"][0]["lastTransitionTime"] == "2024-01-01T00:00:00Z"  # same status: kept
    assert fragment["conditions"][1]["lastTransitionTime"] == "2025-01-01T00:00:00Z"
    assert fragment["autoscaling"] == {"desiredReplicas": 2}


def test_clamping_by_max_replicas_sets_scaling_limited() -> None:
    config = PolicyConfig(min_replicas=1, max_replicas=2, scale_up_max_step=10)
    snapshot = Snapshot(T0, 2, 2, replicas=(ReplicaMetrics(40, 4), ReplicaMetrics(40, 4)))
    decision = decide(snapshot, config, History(last_desired_replicas=2))
    conditions = {c.type: c for c in decision_conditions(decision, snapshot, config, "", {}, 3)}
    assert (conditions["ScalingLimited"].status, conditions["ScalingLimited"].reason) == (
        "True",
        "TooManyReplicas",
    )
    assert conditions["ScalingActive"].reason == "ValidMetricFound"
    assert conditions["AbleToScale"].observed_generation == 3


def test_no_readable_metrics_and_a_failed_write_are_reported_as_conditions() -> None:
    config = PolicyConfig(min_replicas=1, max_replicas=4)
    snapshot = Snapshot(T0, 2, 2, unscraped_replicas=2)
    decision = decide(snapshot, config, History(last_desired_replicas=2))
    errors = {"llama-abc": "ConnectError: refused"}
    conditions = {c.type: c for c in decision_conditions(decision, snapshot, config, "forbidden", errors, 1)}
    assert conditions["ScalingActive"].reason == "FailedGetMetrics"
    assert "llama-abc: ConnectError" in conditions["ScalingActive"].message
    assert (conditions["AbleToScale"].status, conditions["AbleToScale"].reason) == (
        "False",
        "FailedUpdateScale",
    )


def test_batch_slots_come_from_max_num_seqs_in_either_spelling() -> None:
    assert (
        batch_slots(spec(engine={"kind": "vllm", "args": ["--max-num-seqs=64"]}, resources={"gpus": 1})) == 64
    )
    assert (
        batch_slots(spec(engine={"kind": "vllm", "args": ["--max-num-seqs", "8"]}, resources={"gpus": 1}))
        == 8
    )
    # vLLM's default depends on the GPU: unknown, so the batch-slot signal stays off.
    assert batch_slots(spec(engine={"kind": "vllm"}, resources={"gpus": 1})) is None
    assert batch_slots(spec()) == 256  # the simulator's default


def test_policy_settings_come_from_the_spec() -> None:
    config = policy_config(
        spec(minReplicas=0, maxReplicas=6, autoscaling={"queueDepthTarget": 2, "scaleDownDelaySeconds": 30})
    )
    assert (config.min_replicas, config.max_replicas, config.queue_depth_target) == (0, 6, 2)
    assert config.scale_down_delay_seconds == 30 and config.batch_slots_target == 0.8


def test_only_ready_pods_with_an_ip_are_scraped() -> None:
    def pod(name: str, ready: str, ip: str | None, deleting: bool = False) -> dict[str, object]:
        return {
            "metadata": {"name": name, "deletionTimestamp": "2024-01-01T00:00:00Z" if deleting else None},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
        }

    pods = [pod("a", "True", "10.0.0.1"), pod("b", "False", "10.0.0.2"), pod("c", "True", None),
            pod("d", "True", "10.0.0.4", deleting=True)]  # fmt: skip
    assert [t.pod_name for t in ready_targets("ai", pods)] == ["a"]


def test_the_batch_slots_target_follows_the_kv_cache_target_unless_set() -> None:
    assert policy_config(spec(autoscaling={"kvCacheTarget": 0.7})).batch_slots_target == 0.7
    apart = spec(autoscaling={"kvCacheTarget": 0.9, "batchSlotsTarget": 0.5})
    assert (policy_config(apart).kv_cache_target, policy_config(apart).batch_slots_target) == (0.9, 0.5)
