"""Budget math: per-second spend across restarts, UTC month rollover, clocks that jump, and the caps."""

from datetime import UTC, datetime, timedelta

import pytest

from llmserve.api.burstpool import BurstPoolStatus
from llmserve.burst.budget import Billing, Caps, create_refusal, integrate_spend, over_budget, rfc3339

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def test_spend_integrates_per_second_at_live_prices_per_model() -> None:
    status = BurstPoolStatus()
    integrate_spend(status, T0, [])
    added = integrate_spend(status, T0 + timedelta(minutes=30), [Billing("ai/a", 2.0), Billing("ai/b", 1.0)])
    assert added == pytest.approx(1.5)
    assert status.spent_this_month_usd == pytest.approx(1.5)
    assert {m.owner: m.spent_this_month_usd for m in status.models} == pytest.approx(
        {"ai/a": 1.0, "ai/b": 0.5}
    )


def test_a_restart_loses_nothing_because_the_integration_time_is_in_status() -> None:
    status = BurstPoolStatus()
    integrate_spend(status, T0, [])
    reloaded = BurstPoolStatus.model_validate(status.to_wire())  # what a new process reads back
    integrate_spend(reloaded, T0 + timedelta(hours=2), [Billing("ai/a", 3.0)])
    assert reloaded.spent_this_month_usd == pytest.approx(6.0)


def test_clock_going_back_adds_nothing_and_nothing_twice_later() -> None:
    status = BurstPoolStatus()
    integrate_spend(status, T0, [])
    integrate_spend(status, T0 + timedelta(hours=1), [Billing("ai/a", 1.0)])
    assert integrate_spend(status, T0 + timedelta(minutes=30), [Billing("ai/a", 1.0)]) == 0
    assert status.spend_updated == rfc3339(T0 + timedelta(hours=1))
    integrate_spend(status, T0 + timedelta(hours=2), [Billing("ai/a", 1.0)])
    assert status.spent_this_month_usd == pytest.approx(2.0)


def test_utc_month_rollover_starts_the_new_month_from_the_boundary() -> None:
    status = BurstPoolStatus()
    before = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    integrate_spend(status, before, [])
    integrate_spend(status, before + timedelta(minutes=30), [Billing("ai/a", 2.0)])
    assert status.spend_month == "2026-11" and status.spent_this_month_usd == pytest.approx(1.0)
    integrate_spend(status, before + timedelta(hours=2), [Billing("ai/a", 2.0)])
    assert status.spend_month == "2026-12"
    assert status.spent_this_month_usd == pytest.approx(2.0)  # 00:00 to 01:00 UTC only
    assert status.models[0].spent_this_month_usd == pytest.approx(2.0)


def test_create_refused_above_the_hourly_cap_or_the_month_budget() -> None:
    caps = Caps(max_hourly_spend_usd=10, monthly_budget_usd=100, reserve_seconds=3600)
    assert create_refusal(caps, burn_usd_per_hour=8, offer_usd_per_hour=2, spent_usd=0) == ""
    assert "maxHourlySpend" in create_refusal(caps, 8.5, 2, 0)
    assert "monthlyBudget" in create_refusal(caps, 0, 2, 98.5)
    assert over_budget(caps, burn_usd_per_hour=5, spent_usd=96)
    assert not over_budget(caps, burn_usd_per_hour=0, spent_usd=100)


def test_a_price_rise_seen_late_is_billed_from_when_the_price_was_last_confirmed() -> None:
    from llmserve.api.burstpool import InstanceStatus
    from llmserve.burst.budget import back_bill_price_rise

    status = BurstPoolStatus()
    record = InstanceStatus(
        name="n",
        owner="ai/a",
        slot=0,
        phase="Running",
        usd_per_hour=2.0,
        created=rfc3339(T0),
        price_seen=rfc3339(T0),
    )
    # An outage hid the rise for two hours: the integration so far used 2.0 USD/h.
    added = back_bill_price_rise(status, record, 3.0, T0 + timedelta(hours=2))
    assert added == pytest.approx(2.0)
    assert status.spent_this_month_usd == pytest.approx(2.0)
    record.usd_per_hour = 3.0  # what the controller records next
    assert back_bill_price_rise(status, record, 3.0, T0 + timedelta(hours=3)) == 0  # confirmed since
