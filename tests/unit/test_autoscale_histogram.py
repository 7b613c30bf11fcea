"""Histogram arithmetic and quantiles, and windowed rates from recorded scrapes (injected clock)."""

from __future__ import annotations

import pytest

from llmserve.autoscale.histogram import Histogram
from llmserve.autoscale.window import EngineCounters, SignalWindow

BOUNDS = (0.1, 0.5, 1.0, 2.5)


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    # 10 observations: 4 <= 0.1, 4 in (0.1, 0.5], 2 in (0.5, 1.0]
    h = Histogram(BOUNDS, (4, 8, 10, 10, 10), 3.0)
    assert h.quantile(0.5) == pytest.approx(0.1 + 0.4 * (5 - 4) / 4)
    assert h.quantile(0.9) == pytest.approx(0.5 + 0.5 * (9 - 8) / 2)
    assert h.mean == pytest.approx(0.3)


def test_a_rank_beyond_the_last_bound_answers_the_last_bound() -> None:
    assert Histogram.of(BOUNDS, [0.05, 9.0, 9.0]).quantile(0.9) == 2.5


def test_differences_between_scrapes_and_resets() -> None:
    before = Histogram.of(BOUNDS, [0.05, 0.7])
    after = Histogram.of(BOUNDS, [0.05, 0.7, 2.0, 2.0])
    delta = after.minus(before)
    assert delta is not None and delta.count == 2 and delta.quantile(0.5) == pytest.approx(1.75)
    assert before.minus(after) is None  # counts went down: the engine restarted


def counters(finished: float, prompt: float, ttft: list[float]) -> EngineCounters:
    return EngineCounters(finished, prompt, finished * 100, Histogram.of(BOUNDS, ttft), None)


def test_rates_count_arrivals_as_finished_plus_growth_in_flight() -> None:
    window = SignalWindow()
    window.observe(0.0, {"a": (counters(0, 0, []), 0, 0)})
    # 10 s later: 20 finished, 5 more in flight, 20 prompts of 1000 tokens, TTFT mostly fast
    window.observe(10.0, {"a": (counters(20, 20_000, [0.05] * 18 + [2.0] * 2), 5, 4)})
    rates = window.rates(10.0, 60.0)
    assert rates is not None
    assert rates.arrivals_per_second == pytest.approx(2.5)
    assert rates.prompt_tokens_per_request == pytest.approx(1000)
    assert rates.output_tokens_per_request == pytest.approx(100)
    assert rates.time_to_first_token is not None and rates.time_to_first_token.quantile(0.95) > 1.0


def test_a_new_replica_sets_a_baseline_and_a_restarted_one_is_skipped() -> None:
    window = SignalWindow()
    window.observe(0.0, {"a": (counters(100, 1e5, [0.1] * 100), 0, 0)})
    # b appears with a lifetime of counts; a restarted (its counters went down)
    window.observe(5.0, {"a": (counters(3, 3e3, [0.1] * 3), 0, 0), "b": (counters(500, 5e5, []), 0, 0)})
    assert window.rates(5.0, 60.0) is not None and window.rates(5.0, 60.0).arrivals_per_second == 0  # type: ignore[union-attr]
    window.observe(10.0, {"a": (counters(8, 8e3, [0.1] * 8), 0, 0), "b": (counters(510, 5.1e5, []), 0, 0)})
    rates = window.rates(10.0, 5.0)
    assert rates is not None and rates.arrivals_per_second == pytest.approx((5 + 10) / 5)


def test_old_increments_leave_the_window() -> None:
    window = SignalWindow(keep_seconds=30)
    for t in range(0, 100, 5):
        window.observe(float(t), {"a": (counters(t, t * 1000, []), 0, 0)})
    rates = window.rates(95.0, 15.0)
    assert rates is not None and rates.span_seconds == pytest.approx(15.0)
    assert rates.arrivals_per_second == pytest.approx(1.0)
