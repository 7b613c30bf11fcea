"""Replicas that have just become ready are held as if asked for then: the scale-down window counts from
when they became ready, even when the recommendation that bought them left it while they started.

Pure policy with an injected clock (docs/autoscaling.md, "Replicas held once they are ready").
"""

from __future__ import annotations

from llmserve.autoscale.hold import READY_HOLD, hold_newly_ready
from llmserve.autoscale.policy import Decision, History, decide
from llmserve.autoscale.state import history_from_status, scale_status
from tests.unit.test_autoscale_cancel import CONFIG, INTERVAL, STARTUP, T0, crowd_history, demand, snapshot


def replay(history: History, decisions: int, ready_at: float, restart: bool = False) -> list[Decision]:
    """A crowd asked for 12 replicas at T0; 4 were ready, the other 8 become ready `ready_at` after T0.
    The need has fallen back to 4 but arrivals are not falling (so no starting replica is cancelled)."""
    out, current = [], 12
    for n in range(decisions):
        now = T0 + INTERVAL * (n + 1)
        ready = 12 if now - T0 >= ready_at else 4
        decision = decide(snapshot(now, current, ready, demand(4.0, falling=False)), CONFIG, history)
        out.append(decision)
        history, current = decision.history, decision.desired_replicas
        if restart:
            history = history_from_status(scale_status(decision, ready, None, None).to_wire())
    return out


def test_replicas_ready_just_as_their_recommendation_expires_are_held_a_window_from_then() -> None:
    # The start-up is as long as the window (300 s): the 8 replicas are ready at T0 + 300 s, the moment
    # the crowd's recommendation leaves the window. Before, they went at the next decision.
    assert READY_HOLD and STARTUP == 300.0
    decisions = replay(crowd_history(12), decisions=130, ready_at=STARTUP)
    for n, decision in enumerate(decisions):
        since = INTERVAL * (n + 1)
        assert decision.desired_replicas == (12 if since <= 2 * STARTUP else 4), since
    released = next(d for d in decisions if d.desired_replicas == 4)
    assert "holding" not in released.reason


def test_replicas_ready_early_in_the_window_are_held_a_window_from_when_they_became_ready() -> None:
    # Ready at T0 + 60 s: held until T0 + 360 s rather than until the crowd's recommendation expires.
    decisions = replay(crowd_history(12), decisions=100, ready_at=60.0)
    for n, decision in enumerate(decisions):
        since = INTERVAL * (n + 1)
        assert decision.desired_replicas == (12 if since <= 60.0 + STARTUP else 4), since


def test_an_operator_that_restarts_before_they_are_ready_counts_from_its_first_decision() -> None:
    # The ready count is not persisted: a restart between every decision never sees replicas *become*
    # ready, so only the window holds them (this is the behaviour before the ready hold).
    decisions = replay(crowd_history(12), decisions=80, ready_at=STARTUP, restart=True)
    for n, decision in enumerate(decisions):
        since = INTERVAL * (n + 1)
        assert decision.desired_replicas == (12 if since <= STARTUP else 4), since


def test_the_ready_hold_keeps_the_window_a_sliding_maximum_and_shortens_nothing() -> None:
    window = ((T0 - 100.0, 12), (T0 - 10.0, 9))
    # 10 ready now, 4 before: the 12 still rules until it expires, the 9 can never be the highest again.
    assert hold_newly_ready(window, T0, 10, 4, 1) == ((T0 - 100.0, 12), (T0, 10))
    # No rise in the ready count, no count from before (a restart), or a rise to the floor: nothing.
    assert hold_newly_ready(window, T0, 10, 10, 1) == window
    assert hold_newly_ready(window, T0, 10, None, 1) == window
    assert hold_newly_ready((), T0, 2, 1, 2) == ()
