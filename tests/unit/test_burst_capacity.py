"""The autoscaler counts serving rented replicas as ready capacity standing in for Unschedulable ones."""

from __future__ import annotations

from llmserve.autoscale.policy import ReplicaMetrics, Snapshot
from llmserve.controller.burst_capacity import BurstCapacity, with_burst

LOCAL = ReplicaMetrics(requests_waiting=4, requests_running=8, kv_cache_fraction=0.5)
RENTED = ReplicaMetrics(requests_waiting=0, requests_running=2, kv_cache_fraction=0.1)


def snapshot() -> Snapshot:
    return Snapshot(now_seconds=100.0, current_replicas=3, ready_replicas=2, unschedulable_replicas=1,
                    replicas=(LOCAL, LOCAL), unscraped_replicas=0)  # fmt: skip


def test_a_serving_rented_replica_is_ready_capacity_in_place_of_an_unschedulable_one() -> None:
    out = with_burst(snapshot(), BurstCapacity(ready=1, metrics=[RENTED]))
    assert (out.ready_replicas, out.unschedulable_replicas, out.unscraped_replicas) == (3, 0, 0)
    assert out.replicas == (LOCAL, LOCAL, RENTED) and out.starting_replicas == 0


def test_a_rented_replica_that_could_not_be_scraped_counts_as_unscraped() -> None:
    out = with_burst(snapshot(), BurstCapacity(ready=1, errors={"i-0": "ConnectError"}))
    assert (out.ready_replicas, out.unscraped_replicas, len(out.replicas)) == (3, 1, 2)


def test_without_rented_replicas_the_snapshot_is_unchanged() -> None:
    assert with_burst(snapshot(), BurstCapacity()) == snapshot()


def test_requests_waiting_in_the_gateway_stay_in_the_snapshot_with_rented_replicas() -> None:
    from dataclasses import replace

    waiting = replace(snapshot(), gateway_waiting_requests=12, gateway_unread=True)
    out = with_burst(waiting, BurstCapacity(ready=1, metrics=[RENTED]))
    assert (out.gateway_waiting_requests, out.gateway_unread) == (12, True)
