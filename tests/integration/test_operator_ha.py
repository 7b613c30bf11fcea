"""Two operator replicas: one acts, the other stands by and takes over when the active one dies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.support.cluster import TEST_LEASE_ENV, ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.load import LoadGenerator
from tests.support.manifests import llmserve, wait_ready
from tests.support.prom import sample_total

pytestmark = pytest.mark.cluster

LEASE = ("lease", "llmserve-operator", "default")
# Lease duration (8 s here) + one retry period (1 s) + kopf's start-up and first pass on a shared 2-core
# machine: the bound this test holds a takeover to.
TAKEOVER_BOUND_SECONDS = int(TEST_LEASE_ENV["LLMSERVE_LEASE_DURATION_SECONDS"]) + 1 + 11
INTERVAL_SECONDS = 1
# Longer than a takeover takes (about 10 s), so a new leader that forgot the window would scale down early.
SCALE_DOWN_DELAY_SECONDS = 20
SCALE_UP_TIMEOUT_SECONDS = 60  # for spec.replicas to reach 3, then again for 3 ready replicas
# The load outlasts both waits and the reads before the kill (margin 30 s): the 3 replicas must be held
# by load up to the kill, so that after it only the new leader's remembered window keeps them. (At 120 s,
# two slow waits let it end first; the old leader could then scale down before the takeover.)
LOAD_SECONDS = 2 * SCALE_UP_TIMEOUT_SECONDS + 30


def holder(cluster: ClusterHandle) -> str:
    lease = cluster.get(*LEASE) or {}
    return str(lease.get("spec", {}).get("holderIdentity") or "")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def pair(cluster: ClusterHandle, operator_process: OperatorProcess) -> Iterator[list[OperatorProcess]]:
    """The session's operator plus a second replica; whichever the test kills is started again after."""
    second = OperatorProcess(cluster, name="operator-2")
    second.start()
    try:
        yield [operator_process, second]
    finally:
        if operator_process.process is None:
            operator_process.start()
        second.stop()  # releases the Lease if it holds it: the session's operator takes over at once
        wait_for(lambda: holder(cluster) == operator_process.identity, timeout=30, message="lease back")


def test_the_standby_takes_over_when_the_active_operator_dies_mid_load(
    cluster: ClusterHandle, pair: list[OperatorProcess], namespace: str
) -> None:
    active_id = wait_for(lambda: holder(cluster), timeout=30, message="a lease holder")
    active = next(p for p in pair if p.identity == active_id)
    standby = next(p for p in pair if p is not active)

    autoscaling = {"intervalSeconds": INTERVAL_SECONDS, "queueDepthTarget": 4, "scaleUpMaxStep": 4,
                   "scaleDownDelaySeconds": SCALE_DOWN_DELAY_SECONDS}  # fmt: skip
    manifest = llmserve(autoscaling=autoscaling, minReplicas=1, maxReplicas=3)
    manifest["spec"]["engine"]["args"] = ["--max-num-seqs=2"]
    cluster.apply(manifest, namespace)
    wait_ready(cluster, namespace, "llama", 1)
    key = {"llmserve": "llama", "namespace": namespace}
    assert sample_total(standby.metrics_text(), "llmserve_operator_leader") == 0
    assert sample_total(active.metrics_text(), "llmserve_operator_leader") == 1

    with LoadGenerator(cluster, namespace, concurrency=16, max_seconds=LOAD_SECONDS) as load:
        wait_for(lambda: spec_replicas(cluster, namespace) == 3, timeout=SCALE_UP_TIMEOUT_SECONDS,
                 message="scaled to 3")  # fmt: skip
        wait_ready(cluster, namespace, "llama", 3, timeout=SCALE_UP_TIMEOUT_SECONDS)
        before = cluster.get("llmserve", "llama", namespace)
        deployment = cluster.get("deployment", "llama", namespace)
        # The standby has done nothing: no reconcile, no autoscaler decision for the object.
        standby_page = standby.metrics_text()
        assert sample_total(standby_page, "llmserve_reconcile_duration_seconds_count", **key) == 0
        assert sample_total(standby_page, "llmserve_autoscaler_decision_duration_seconds_count", **key) == 0

        assert not load.finished.is_set(), "the load ended before the active operator was killed"
        active.kill()
        load.stop()  # idle from now on: only the remembered window keeps the 3 replicas
    wait_for(lambda: holder(cluster) == standby.identity, timeout=TAKEOVER_BOUND_SECONDS,
             message=f"the standby holds the lease within {TAKEOVER_BOUND_SECONDS}s")  # fmt: skip
    wait_for(lambda: sample_total(standby.metrics_text(), "llmserve_autoscaler_decision_duration_seconds_count", **key) > 0,
             timeout=TAKEOVER_BOUND_SECONDS, message="the new leader's autoscaler deciding")  # fmt: skip

    # The new leader acts on a spec change (its reconciler runs) ...
    cluster.kubectl(
        "patch", "llms/llama", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxReplicas":4}}'
    )
    assert before is not None
    generation = before["metadata"]["generation"] + 1
    acted = wait_for(
        lambda: (o := cluster.get("llmserve", "llama", namespace)) and (o["status"].get("observedGeneration") or 0) >= generation and o,
        timeout=30, message="the new leader's reconciler observed the new generation",
    )  # fmt: skip
    # ... without new children, and with every status field of both writers still there.
    after = cluster.get("deployment", "llama", namespace)
    assert after and deployment and after["metadata"]["uid"] == deployment["metadata"]["uid"]
    assert len(cluster.list("deployments", namespace)) == 1 and len(cluster.list("services", namespace)) == 1
    assert len(cluster.list("replicasets", namespace)) == 1
    assert condition(acted, "Ready")["status"] == "True" and condition(acted, "ScalingActive")
    assert acted["status"]["autoscaling"]["recommendations"], acted["status"]

    # No early scale-down: the first scale-down comes a full delay after the last recommendation for 3
    # that either leader recorded (times as the operators wrote them in status, not the test's clock).
    last_high: list[float] = []

    def scaled_down() -> dict[str, Any] | None:
        obj = cluster.get("llmserve", "llama", namespace) or {}
        scaling = obj.get("status", {}).get("autoscaling", {})
        last_high.extend(epoch(r["time"]) for r in scaling.get("recommendations", []) if r["replicas"] == 3)
        # The scale-down as the autoscaler recorded it: /scale is written before status, so spec.replicas
        # alone can be read while lastScaleTime still holds the scale-up's time.
        recorded = "below" in (scaling.get("lastScaleReason") or "")
        return obj if recorded and (obj.get("spec", {}).get("replicas") or 3) < 3 else None

    down = wait_for(scaled_down, timeout=SCALE_DOWN_DELAY_SECONDS + TAKEOVER_BOUND_SECONDS + 20, interval=0.2,
                    message="scale-down after the delay")  # fmt: skip
    assert last_high, "a recommendation for 3 replicas was in status before the scale-down"
    scaled_at = epoch(down["status"]["autoscaling"]["lastScaleTime"])
    assert scaled_at - max(last_high) >= SCALE_DOWN_DELAY_SECONDS - 1, (scaled_at, max(last_high))
    assert "below" in down["status"]["autoscaling"]["lastScaleReason"], down["status"]["autoscaling"]


def spec_replicas(cluster: ClusterHandle, namespace: str) -> int | None:
    value = (cluster.get("llmserve", "llama", namespace) or {}).get("spec", {}).get("replicas")
    return value if isinstance(value, int) else None
