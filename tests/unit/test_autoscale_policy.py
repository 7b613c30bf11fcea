"""The pure scaling policy on hand-made snapshots: one test per rule in docs/autoscaling.md."""

from __future__ import annotations

from llmserve.autoscale.policy import (
    Decision,
    History,
    PolicyConfig,
    ReplicaMetrics,
    Snapshot,
    decide,
)

CONFIG = PolicyConfig(
    min_replicas=1,
    max_replicas=10,
    queue_depth_target=4,
    kv_cache_target=0.8,
    tolerance=0.1,
    scale_up_max_step=4,
    scale_down_delay_seconds=300,
    scale_to_zero_idle_seconds=600,
)
T0 = 1_700_000_000.0


def replica(waiting: float = 0, running: float = 0, kv: float | None = 0.0) -> ReplicaMetrics:
    return ReplicaMetrics(requests_waiting=waiting, requests_running=running, kv_cache_fraction=kv)


def snapshot(
    *replicas: ReplicaMetrics,
    current: int | None = None,
    now: float = T0,
    unscraped: int = 0,
    starting: int = 0,
    unschedulable: int = 0,
) -> Snapshot:
    ready = len(replicas) + unscraped
    return Snapshot(
        now_seconds=now,
        current_replicas=ready + starting + unschedulable if current is None else current,
        ready_replicas=ready,
        unschedulable_replicas=unschedulable,
        replicas=tuple(replicas),
        unscraped_replicas=unscraped,
    )


def run(snap: Snapshot, config: PolicyConfig = CONFIG, history: History | None = None) -> Decision:
    return decide(snap, config, history or History(last_desired_replicas=snap.current_replicas))


def test_scales_up_when_queue_depth_exceeds_target() -> None:
    decision = run(snapshot(replica(waiting=9.5, running=4), replica(waiting=9.5, running=4)))
    # 2 replicas x 9.5 / 4 = 4.75 -> 5
    assert decision.desired_replicas == 5
    assert decision.reason == "queue depth 9.5/replica above target 4"


def test_scales_up_on_a_full_kv_cache_even_without_a_queue() -> None:
    decision = run(snapshot(replica(running=30, kv=0.96), replica(running=30, kv=0.96)))
    # 2 x 0.96 / 0.8 = 2.4 -> 3
    assert decision.desired_replicas == 3
    assert decision.signals.dominant == "kv cache"
    assert "KV cache 96% above target 80%" in decision.reason


def test_the_stronger_signal_wins() -> None:
    queue_heavy = run(snapshot(replica(waiting=16, kv=0.5), replica(waiting=16, kv=0.5)))
    kv_heavy = run(snapshot(replica(waiting=4.4, kv=1.0), replica(waiting=4.4, kv=1.0)))
    assert (queue_heavy.signals.dominant, queue_heavy.desired_replicas) == (
        "queue depth",
        6,
    )  # 2 x 16/4 = 8, step 4
    assert (kv_heavy.signals.dominant, kv_heavy.desired_replicas) == ("kv cache", 3)  # 2 x 1.25


def test_holds_inside_the_tolerance_band() -> None:
    inside = run(snapshot(replica(waiting=4.3), replica(waiting=4.3), replica(waiting=4.3)))
    outside = run(snapshot(replica(waiting=4.6), replica(waiting=4.6), replica(waiting=4.6)))
    assert inside.desired_replicas == 3 and "within tolerance" in inside.reason
    assert outside.desired_replicas == 4  # 3 x 1.15 = 3.45 -> 4


def test_scale_up_is_bounded_by_the_max_step() -> None:
    decision = run(snapshot(replica(waiting=40)))  # wants 10
    assert decision.recommended_replicas == 10
    assert decision.desired_replicas == 1 + CONFIG.scale_up_max_step
    assert decision.limited_by == "step"


def test_starting_replicas_count_as_capacity_so_a_cold_start_does_not_stampede() -> None:
    # Two ready replicas with 9 waiting each asked for 5; 3 are still loading the model.
    decision = run(snapshot(replica(waiting=9), replica(waiting=9), starting=3))
    # 18 waiting over 5 replicas = 3.6/replica: within tolerance of 4, no further scale-up.
    assert decision.signals.queue_depth_per_replica == 3.6
    assert decision.desired_replicas == 5


def test_a_replica_that_cannot_be_scraped_never_justifies_a_scale_down() -> None:
    decision = run(snapshot(replica(), replica(), unscraped=1))
    assert decision.desired_replicas == 3
    assert decision.partial_data
    assert "could not be scraped" in decision.reason


def test_partial_data_may_still_scale_up() -> None:
    decision = run(snapshot(replica(waiting=20), unscraped=1))
    # The scraped replica wants 1 x 20/4 = 5; the unscraped one keeps its share: 6.
    assert decision.desired_replicas == 6


def test_no_readable_replica_holds_the_current_count() -> None:
    decision = run(snapshot(unscraped=3))
    assert decision.desired_replicas == 3
    assert decision.no_data


def test_scale_down_waits_for_the_stabilization_window() -> None:
    busy = run(snapshot(*[replica(waiting=4, running=8)] * 4))
    assert busy.desired_replicas == 4
    history = busy.history
    for seconds in (5, 150, 299):
        quiet = decide(snapshot(*[replica()] * 4, now=T0 + seconds), CONFIG, history)
        assert quiet.desired_replicas == 4 and quiet.stabilized
        history = quiet.history
    after = decide(snapshot(*[replica()] * 4, now=T0 + 301), CONFIG, history)
    assert after.desired_replicas == 1
    assert after.reason.startswith("queue depth 0.0/replica below target 4")


def test_the_highest_recommendation_in_the_window_wins() -> None:
    history = History(recommendations=((T0 - 200, 8), (T0 - 100, 6), (T0 - 10, 3)), last_desired_replicas=8)
    decision = decide(snapshot(*[replica()] * 8), CONFIG, history)
    assert decision.desired_replicas == 8
    later = decide(snapshot(*[replica()] * 8, now=T0 + 150), CONFIG, decision.history)
    assert later.desired_replicas == 6  # the 8 left the window; the 6 is still in it


def test_clamps_to_max_replicas_and_says_so() -> None:
    config = PolicyConfig(min_replicas=1, max_replicas=3, scale_up_max_step=10)
    decision = run(snapshot(replica(waiting=100), replica(waiting=100)), config)
    assert decision.desired_replicas == 3
    assert decision.limited_by == "max"


def test_never_scales_below_min_replicas() -> None:
    config = PolicyConfig(min_replicas=2, max_replicas=10, scale_down_delay_seconds=0)
    decision = run(snapshot(replica(), replica(), replica()), config)
    assert decision.desired_replicas == 2
    assert decision.limited_by == "min"


def test_a_count_outside_new_bounds_is_clamped_at_once() -> None:
    config = PolicyConfig(min_replicas=1, max_replicas=2)
    decision = run(snapshot(*[replica(waiting=4)] * 5), config)
    assert decision.desired_replicas == 2
    assert "maxReplicas 2" in decision.reason


def test_scales_to_zero_after_the_idle_period_when_min_is_zero() -> None:
    config = PolicyConfig(min_replicas=0, max_replicas=4, scale_to_zero_idle_seconds=60)
    history = History(last_active_seconds=T0 - 59, last_desired_replicas=1)
    assert decide(snapshot(replica()), config, history).desired_replicas == 1
    idle = decide(snapshot(replica(), now=T0 + 1), config, history)
    assert idle.desired_replicas == 0 and idle.scaled_to_zero
    assert "idle for 60s" in idle.reason


def test_the_load_path_never_reaches_zero_while_requests_run() -> None:
    config = PolicyConfig(min_replicas=0, max_replicas=4, scale_to_zero_idle_seconds=60)
    history = History(last_active_seconds=T0 - 3600, last_desired_replicas=1)
    decision = decide(snapshot(replica(running=1)), config, history)
    assert decision.desired_replicas == 1
    assert decision.history.last_active_seconds == T0


def test_does_not_scale_to_zero_when_min_is_positive() -> None:
    history = History(last_active_seconds=T0 - 86400, last_desired_replicas=1)
    assert decide(snapshot(replica()), CONFIG, history).desired_replicas == 1


def test_a_wake_from_zero_by_someone_else_restarts_the_idle_clock() -> None:
    config = PolicyConfig(min_replicas=0, max_replicas=4, scale_to_zero_idle_seconds=60)
    asleep = History(last_active_seconds=T0 - 3600, last_desired_replicas=0)
    woken = decide(snapshot(current=1, starting=0), config, asleep)  # the gateway set replicas 0 -> 1
    assert woken.desired_replicas == 1
    assert woken.history.last_active_seconds == T0
    still_idle = decide(snapshot(replica(), now=T0 + 30), config, woken.history)
    assert still_idle.desired_replicas == 1


def test_stays_at_zero_until_someone_wakes_the_model() -> None:
    config = PolicyConfig(min_replicas=0, max_replicas=4)
    decision = decide(snapshot(current=0), config, History(last_desired_replicas=0))
    assert decision.desired_replicas == 0


def test_an_unscraped_replica_is_never_idle() -> None:
    config = PolicyConfig(min_replicas=0, max_replicas=4, scale_to_zero_idle_seconds=60)
    history = History(last_active_seconds=T0 - 3600, last_desired_replicas=1)
    assert decide(snapshot(unscraped=1), config, history).desired_replicas == 1


def test_a_full_running_batch_keeps_a_busy_fleet_from_shrinking() -> None:
    config = PolicyConfig(
        min_replicas=1, max_replicas=10, batch_slots_per_replica=4, scale_down_delay_seconds=0
    )
    busy = decide(snapshot(*[replica(running=4, kv=0.01)] * 4), config, History(last_desired_replicas=4))
    assert busy.desired_replicas == 4
    half = decide(snapshot(*[replica(running=2, kv=0.01)] * 4), config, History(last_desired_replicas=4))
    assert half.desired_replicas == 2


def test_an_outside_scale_up_is_held_for_the_window() -> None:
    history = History(last_active_seconds=T0, last_desired_replicas=1)
    decision = decide(
        snapshot(replica(), replica(), replica()), CONFIG, history
    )  # kubectl scale --replicas=3
    assert decision.desired_replicas == 3
    later = decide(snapshot(replica(), replica(), replica(), now=T0 + 301), CONFIG, decision.history)
    assert later.desired_replicas == 1


def test_history_keeps_only_recommendations_that_can_still_matter() -> None:
    first = run(snapshot(*[replica(waiting=8)] * 2))  # recommends 4
    second = decide(snapshot(*[replica(waiting=4)] * 4, now=T0 + 5), CONFIG, first.history)  # recommends 4
    assert second.history.recommendations == ((T0 + 5, 4),)
    third = decide(snapshot(*[replica()] * 4, now=T0 + 10), CONFIG, second.history)  # recommends 1
    assert third.history.recommendations == ((T0 + 5, 4),)  # 1 is the floor: nothing to remember


def test_pending_replicas_for_lack_of_gpus_are_reported_as_a_capacity_limit() -> None:
    decision = run(snapshot(replica(waiting=12), unschedulable=1))
    assert decision.desired_replicas > 2
    assert decision.limited_by == "capacity"


def test_with_a_known_batch_size_a_deep_queue_asks_for_replicas_in_proportion_to_the_backlog() -> None:
    config = PolicyConfig(min_replicas=1, max_replicas=20, batch_slots_per_replica=32, scale_up_max_step=20)
    # One replica runs 32 and has 100 waiting: 132 requests over (32 + 4) per replica at target = 4 replicas.
    decision = run(snapshot(replica(waiting=100, running=32)), config)
    assert decision.desired_replicas == 4
    assert decision.reason == "queue depth 100.0/replica above target 4"


def test_a_lower_batch_slots_target_keeps_standing_headroom_for_bursts() -> None:
    four_busy = snapshot(*[replica(running=20, kv=0.1)] * 4)
    filled = PolicyConfig(min_replicas=1, max_replicas=10, batch_slots_per_replica=32, batch_slots_target=0.8)
    headroom = PolicyConfig(
        min_replicas=1, max_replicas=10, batch_slots_per_replica=32, batch_slots_target=0.5
    )
    # 20 of 32 slots is 78% of the batch: inside the 80% target; against a 50% target it is 125%.
    assert run(four_busy, filled).desired_replicas == 4
    decision = run(four_busy, headroom)
    assert decision.desired_replicas == 5
    assert decision.reason == "running batch 20.0/replica above target 50% of 32 batch slots"
