"""Passive health checking: consecutive failures eject for longer, any answer brings a backend back."""

from __future__ import annotations

from llmserve.gateway.health import MAX_EJECT_SECONDS, record_failure, record_success
from llmserve.gateway.registry import BackendLoad


def test_consecutive_failures_double_the_ejection_up_to_a_cap() -> None:
    load = BackendLoad()
    lengths = [record_failure(load, now=100.0, base_seconds=5.0) for _ in range(6)]
    assert lengths == [5.0, 10.0, 20.0, 40.0, MAX_EJECT_SECONDS, MAX_EJECT_SECONDS]
    assert load.ejected_until == 100.0 + MAX_EJECT_SECONDS


def test_an_answer_brings_an_ejected_backend_back_at_once() -> None:
    load = BackendLoad()
    record_failure(load, now=100.0, base_seconds=5.0)
    record_failure(load, now=101.0, base_seconds=5.0)
    assert record_success(load) is True
    assert (load.ejected_until, load.consecutive_failures) == (0.0, 0)
    assert record_success(load) is False  # nothing to report the second time
    assert record_failure(load, now=200.0, base_seconds=5.0) == 5.0  # the count starts over
