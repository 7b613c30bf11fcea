"""The autoscaler on the real control plane, with simulated engines under real HTTP load."""

from __future__ import annotations

import copy
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmserve.autoscale.collect import parse_engine_metrics
from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.load import LoadGenerator, ready_pod_ips

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "examples" / "llama-8b-simulated.yaml").read_text())
SELECTOR = "llmserve.dev/llmserve=llama"
# One decision a second (the schema's minimum): every window below is whole intervals of it.
INTERVAL_SECONDS = 1
QUEUE_TARGET = 4


def llmserve(autoscaling: dict[str, Any], **spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(EXAMPLE)
    manifest["metadata"] = {"name": "llama"}
    # The load repeats one long prompt to make each request a long prefill; prefix caching would skip it.
    manifest["spec"]["engine"]["args"] = ["--max-num-seqs=2", "--no-enable-prefix-caching"]
    manifest["spec"]["autoscaling"] = {
        "intervalSeconds": INTERVAL_SECONDS,
        "queueDepthTarget": QUEUE_TARGET,
        "scaleUpMaxStep": 4,
        # The queue is the signal under test: a full batch at 100% of its slots is on target, so the
        # batch-slot signal (default target kvCacheTarget, 80%) does not scale up before a queue forms.
        "batchSlotsTarget": 1,
        **autoscaling,
    }
    manifest["spec"].update({"minReplicas": 1, "maxReplicas": 3, **spec})
    return manifest


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def spec_replicas(cluster: ClusterHandle, namespace: str) -> int | None:
    obj = cluster.get("llmserve", "llama", namespace) or {}
    value = obj.get("spec", {}).get("replicas")
    return value if isinstance(value, int) else None


def wait_ready_replicas(cluster: ClusterHandle, namespace: str, count: int, timeout: float = 60) -> None:
    wait_for(lambda: len(ready_pod_ips(cluster, namespace)) == count, timeout=timeout,
             message=f"{count} ready replica(s)")  # fmt: skip


def queue_depth(ip: str) -> float:
    try:
        response = httpx.get(f"http://{ip}:8000/metrics", timeout=2, trust_env=False)
        return parse_engine_metrics(response.text).requests_waiting
    except (httpx.HTTPError, ValueError):
        return 0.0


def replicas_after_load(
    cluster: ClusterHandle, namespace: str, seconds: float
) -> list[tuple[float, int | None]]:
    """spec.replicas sampled for `seconds` after the load stopped."""
    start = time.monotonic()
    samples = []
    while time.monotonic() - start < seconds:
        samples.append((time.monotonic() - start, spec_replicas(cluster, namespace)))
        time.sleep(0.5)
    return samples


def last_recommended(cluster: ClusterHandle, namespace: str, replicas: int) -> float:
    """When the autoscaler last recommended `replicas`, as recorded in its scale-down window."""
    obj = cluster.get("llmserve", "llama", namespace)
    assert obj is not None
    window = obj["status"]["autoscaling"]["recommendations"]
    assert max(r["replicas"] for r in window) == replicas, window
    return max(epoch(r["time"]) for r in window if r["replicas"] == replicas)


def wait_scaled_down(cluster: ClusterHandle, namespace: str, replicas: int, timeout: float) -> dict[str, Any]:
    """status.autoscaling once spec.replicas is down to `replicas` and the decision that did it is recorded
    (the autoscaler writes /scale first, then its status)."""

    def done(o: dict[str, Any] | None) -> bool:
        scaling = ((o or {}).get("status") or {}).get("autoscaling") or {}
        return (o or {}).get("spec", {}).get("replicas") == replicas and scaling.get(
            "desiredReplicas"
        ) == replicas

    obj = wait_for(
        lambda: (o := cluster.get("llmserve", "llama", namespace)) and done(o) and o,
        timeout=timeout,
        message=f"scaled down to {replicas}",
    )  # fmt: skip
    scaling: dict[str, Any] = obj["status"]["autoscaling"]
    return scaling


def load_ratio(scaling: dict[str, Any]) -> float:
    """The queue signal as the policy weighs it with 2 batch slots: (running + waiting) / (slots + target)."""
    running = scaling.get("requestsRunningPerReplica") or 0.0
    return (running + (scaling.get("queueDepthPerReplica") or 0.0)) / (2 + QUEUE_TARGET)


def ramp_up(cluster: ClusterHandle, namespace: str) -> list[dict[str, Any]]:
    """Waits for the queue to pass its target and then for the autoscaler to add replicas; returns the
    status.autoscaling the autoscaler recorded before and at the scale-up."""
    ip = ready_pod_ips(cluster, namespace)[0]
    wait_for(lambda: queue_depth(ip) > QUEUE_TARGET, timeout=30, interval=0.1, message="queue above target")
    recorded: list[dict[str, Any]] = []

    def scaled_up() -> bool:
        obj = cluster.get("llmserve", "llama", namespace) or {}
        scaling = (obj.get("status") or {}).get("autoscaling") or {}
        if scaling and scaling not in recorded:
            recorded.append(scaling)
        return (obj.get("spec", {}).get("replicas") or 1) > 1

    wait_for(scaled_up, timeout=15, interval=0.1, message="autoscaler adds replicas")
    return recorded


def test_replicas_rise_within_two_intervals_of_the_queue_passing_its_target(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve({"scaleDownDelaySeconds": 5}), namespace)
    wait_ready_replicas(cluster, namespace, 1)
    # 16 in flight on one replica: (2 running + 14 waiting) / (2 slots + target 4) asks for 3 replicas.
    # The load outlasts every wait below (ramp_up's 30 + 15 s, 60 s for 3 ready, 5 intervals): the decision
    # judged last must be made under it. (At the default 90 s, a loaded machine's slow pod starts let it run
    # out first; the decision then saw no load and was clamped to minReplicas: ScalingLimited TooFewReplicas.)
    with LoadGenerator(cluster, namespace, concurrency=16, max_seconds=150) as load:
        recorded = ramp_up(cluster, namespace)
        # Judged on the decisions the autoscaler recorded, not on the test's clock (issue 11): none saw
        # the load clearly above target (beyond the 10% tolerance) and held one replica.
        held = [r for r in recorded if r.get("desiredReplicas") == 1 and load_ratio(r) > 1.2]
        assert not held, recorded
        wait_ready_replicas(cluster, namespace, 3)
        obj = wait_for(
            lambda: (o := cluster.get("llmserve", "llama", namespace)) and o["status"]["autoscaling"].get("scrapedReplicas") == 3 and o,
            timeout=5 * INTERVAL_SECONDS,
            message="a decision that read all 3 replicas",
        )  # fmt: skip
        # The load started before the scale-up and runs until it finishes: still running now, it was
        # running when that decision was made.
        assert not load.finished.is_set(), "the load ended before the decision with 3 replicas was read"
    assert load.sent > 0 and load.errors == 0
    scaling = obj["status"]["autoscaling"]
    assert "above target" in scaling["lastScaleReason"]
    assert scaling["desiredReplicas"] == 3
    assert condition(obj, "ScalingActive")["reason"] == "ValidMetricFound"
    # 16 in flight over 3 replicas is at most (2 + 10/3) / 6 = 0.89 of target: never more than 3 wanted.
    assert condition(obj, "ScalingLimited")["reason"] == "DesiredWithinRange"
    assert condition(obj, "Ready")["status"] == "True"  # the reconciler's conditions survive ours
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=SuccessfulRescale"
    ).stdout
    assert "New size: " in events and "reason: queue depth" in events
    metrics = operator_process.metrics_text()
    assert (
        f'llmserve_autoscaler_rescales_total{{direction="up",llmserve="llama",namespace="{namespace}"}}'
        in metrics
    )


def test_replicas_fall_only_after_the_scale_down_delay_and_never_below_min(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    delay = 6
    cluster.apply(llmserve({"scaleDownDelaySeconds": delay}, minReplicas=2, replicas=2), namespace)
    wait_ready_replicas(cluster, namespace, 2)
    # The load outlasts the wait below (90 s, and an interval): the scale-up and the decision after it are
    # made under load, not after the load's own budget (the default, 90 s) ran out.
    with LoadGenerator(cluster, namespace, concurrency=16, max_seconds=120) as load:
        # A bound, not a claim: on a busy machine the load generator and the scrapes can lag.
        wait_for(lambda: spec_replicas(cluster, namespace) == 3, timeout=90, message="scaled to max 3")
        time.sleep(INTERVAL_SECONDS)  # let one more decision record the high recommendation
        assert not load.finished.is_set(), "the load ended before the decision after the scale-up"
        load.stop()
    held_since = last_recommended(cluster, namespace, 3)
    # On recorded facts (issue 11): the scale-down came a full delay after the last recommendation of 3.
    scaling = wait_scaled_down(cluster, namespace, 2, timeout=delay + 30)
    assert epoch(scaling["lastScaleTime"]) >= held_since + delay, scaling
    samples = replicas_after_load(cluster, namespace, 3 * INTERVAL_SECONDS)
    assert all(n == 2 for _, n in samples), samples  # never below minReplicas


def test_an_idle_model_with_min_zero_scales_to_zero_and_a_wake_gets_a_full_idle_period(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    idle = 4
    cluster.apply(llmserve({"scaleToZeroIdleSeconds": idle}, minReplicas=0, replicas=1), namespace)
    wait_ready_replicas(cluster, namespace, 1)
    wait_for(lambda: spec_replicas(cluster, namespace) == 0, timeout=idle + 4 * INTERVAL_SECONDS + 10,
             message="scaled to zero")  # fmt: skip
    wait_for(lambda: not cluster.list("pods", namespace, SELECTOR), timeout=30, message="pods gone")
    obj = wait_for(
        lambda: (o := cluster.get("llmserve", "llama", namespace)) and condition(o, "Ready").get("reason") == "ScaledToZero" and o,
        timeout=15,
        message="Ready=False ScaledToZero",
    )  # fmt: skip
    assert "idle for" in obj["status"]["autoscaling"]["lastScaleReason"]

    first_zero = epoch(obj["status"]["autoscaling"]["lastScaleTime"])

    # The gateway wakes the model by writing replicas 0 -> 1; the autoscaler must not undo it at once.
    cluster.kubectl("scale", "llms/llama", "-n", namespace, "--replicas=1")
    scaling = wait_scaled_down(cluster, namespace, 0, timeout=idle + 4 * INTERVAL_SECONDS + 10)
    # Judged on what the autoscaler recorded, not on the test's clock: it took the wake as activity (its
    # idle clock restarted after the first scale to zero) and waited a full idle period from there
    # (times are whole seconds, hence the 1 s).
    woke = epoch(scaling["lastActiveTime"])
    assert woke > first_zero, (first_zero, scaling)
    assert epoch(scaling["lastScaleTime"]) >= woke + idle - 1, scaling
    # The wake was recorded as a raise from outside, in status (where a restarted operator reads it back):
    # starting replicas someone else asked for are held for the window, never cancelled as unneeded.
    assert epoch(scaling["replicasRaisedOutsideTime"]) == woke, scaling


def test_an_operator_restart_inside_the_window_does_not_scale_down_early(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    delay = 12  # longer than the restart takes, so a forgetful operator would scale down inside it
    cluster.apply(llmserve({"scaleDownDelaySeconds": delay}), namespace)
    wait_ready_replicas(cluster, namespace, 1)
    with LoadGenerator(cluster, namespace, concurrency=16) as load:
        wait_for(lambda: spec_replicas(cluster, namespace) == 3, timeout=30, message="scaled to 3")
        time.sleep(INTERVAL_SECONDS)
        load.stop()
    # status.autoscaling is written by the autoscaler alone; it is what the restarted one reads back
    held_since = last_recommended(cluster, namespace, 3)

    # Judged on what the autoscaler recorded, not on the test's clock (issue 11): a restarted operator that
    # forgot the window would scale down at its first decision, seconds after the last recommendation of 3.
    operator_process.restart()
    scaling = wait_scaled_down(cluster, namespace, 1, timeout=delay + 30)
    assert epoch(scaling["lastScaleTime"]) >= held_since + delay, scaling


def test_with_autoscaling_disabled_kubectl_scale_alone_decides(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve({"enabled": False, "scaleDownDelaySeconds": 0}, replicas=1), namespace)
    wait_ready_replicas(cluster, namespace, 1)
    with LoadGenerator(cluster, namespace, concurrency=12, max_seconds=30):
        ip = ready_pod_ips(cluster, namespace)[0]
        wait_for(
            lambda: queue_depth(ip) > QUEUE_TARGET, timeout=30, interval=0.1, message="queue above target"
        )
        time.sleep(3 * INTERVAL_SECONDS)
        assert spec_replicas(cluster, namespace) == 1

    cluster.kubectl("scale", "llms/llama", "-n", namespace, "--replicas=2")
    wait_ready_replicas(cluster, namespace, 2)
    time.sleep(3 * INTERVAL_SECONDS)  # idle, with a zero delay: an active autoscaler would shrink at once
    assert spec_replicas(cluster, namespace) == 2
    obj = cluster.get("llmserve", "llama", namespace)
    assert condition(obj, "ScalingActive")["reason"] == "ScalingDisabled"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=SuccessfulRescale"
    ).stdout
    assert "New size" not in events
