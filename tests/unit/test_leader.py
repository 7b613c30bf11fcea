"""Leader election's pure rules: when a candidate may take the Lease, and what it writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmserve.controller.leader import LeaseSettings, Observation, held_spec, may_take

HELD = {"holderIdentity": "pod-a", "renewTime": "2026-01-01T00:00:00.000000Z", "leaseDurationSeconds": 15}


def test_a_free_or_own_lease_may_be_taken_at_once() -> None:
    assert may_take({}, "pod-b", Observation(), 0.0)
    assert may_take({**HELD, "holderIdentity": ""}, "pod-b", Observation(), 0.0)
    assert may_take(HELD, "pod-a", Observation(), 0.0)


def test_a_held_lease_is_taken_only_after_a_full_duration_without_renewal_on_our_own_clock() -> None:
    observed = Observation()
    assert not may_take(HELD, "pod-b", observed, 100.0)  # first sight starts our clock
    assert not may_take(HELD, "pod-b", observed, 114.9)
    assert may_take(HELD, "pod-b", observed, 115.0)


def test_a_renewal_restarts_the_wait_whatever_the_renew_time_says() -> None:
    observed = Observation()
    may_take(HELD, "pod-b", observed, 100.0)
    # The holder's clock may be far off; only the fact that renewTime changed matters.
    renewed = {**HELD, "renewTime": "1999-01-01T00:00:00.000000Z"}
    assert not may_take(renewed, "pod-b", observed, 114.0)
    assert not may_take(renewed, "pod-b", observed, 128.9)
    assert may_take(renewed, "pod-b", observed, 129.0)


def test_taking_over_counts_a_transition_and_renewing_does_not() -> None:
    settings = LeaseSettings(identity="pod-b")
    now = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    taken = held_spec({**HELD, "acquireTime": "x", "leaseTransitions": 2}, settings, now)
    assert taken["holderIdentity"] == "pod-b" and taken["leaseTransitions"] == 3
    assert taken["acquireTime"] == taken["renewTime"] == "2026-01-01T00:00:05.000000Z"
    renewed = held_spec(taken, settings, datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC))
    assert renewed["leaseTransitions"] == 3 and renewed["acquireTime"] == taken["acquireTime"]
    assert renewed["renewTime"] == "2026-01-01T00:00:07.000000Z"
    assert held_spec({}, settings, now)["leaseTransitions"] == 0


def test_timings_that_would_let_two_leaders_overlap_are_refused() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        LeaseSettings(identity="x", lease_duration_seconds=10, renew_deadline_seconds=12)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "llmserve-system")
    monkeypatch.setenv("LLMSERVE_LEASE_DURATION_SECONDS", "8")
    monkeypatch.setenv("LLMSERVE_LEASE_RENEW_DEADLINE_SECONDS", "6")
    monkeypatch.setenv("LLMSERVE_LEASE_RETRY_PERIOD_SECONDS", "1")
    settings = LeaseSettings.from_env()
    assert (settings.namespace, settings.lease_duration_seconds, settings.renew_deadline_seconds) == (
        "llmserve-system", 8, 6.0,
    )  # fmt: skip
    assert settings.identity != "-"
