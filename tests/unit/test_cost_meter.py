"""The month-to-date cost meter: GPU-hours and dollars from GPUs held, tokens from engine counters, months."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmserve.api.llmserve import LLMServeSpec
from llmserve.controller.cost import local_holders, state_from_status, status_from_state
from llmserve.cost.counters import CounterFormatError, parse_generation_tokens
from llmserve.cost.meter import Holder, advance, start
from llmserve.cost.prices import EXAMPLE_USD_PER_GPU_HOUR, PriceError, price_book


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


H100 = Holder("pod-a", "local", 1, 2.0)
RENTED = Holder("runpod-1", "rented", 2, 3.0)


def test_an_hour_of_one_gpu_costs_its_price_and_rented_gpus_are_kept_apart() -> None:
    state = start(at("2026-11-10 12:00:00"))
    step = advance(state, at("2026-11-10 13:00:00"), [H100, RENTED], {}, max_gap_seconds=7200)
    month = step.state.current
    assert (month.local.gpu_hours, month.local.usd) == (pytest.approx(1.0), pytest.approx(2.0))
    assert (month.rented.gpu_hours, month.rented.usd) == (pytest.approx(2.0), pytest.approx(6.0))
    assert month.total_usd == pytest.approx(8.0)


def test_tokens_count_counter_growth_and_survive_an_engine_restart() -> None:
    state = start(at("2026-11-10 12:00:00"), {"pod-a": 1000.0})
    assert state.current.output_tokens == 1000  # an engine seen first counts whole
    state = advance(state, at("2026-11-10 12:01:00"), [H100], {"pod-a": 1500.0, "pod-b": 200.0}, 900).state
    assert state.current.output_tokens == 1700
    state = advance(state, at("2026-11-10 12:02:00"), [H100], {"pod-a": 50.0, "pod-b": 200.0}, 900).state
    assert state.current.output_tokens == 1750  # pod-a restarted: its counter began again at 0
    assert state.current.usd_per_million_output_tokens == pytest.approx(state.current.total_usd / 1750 * 1e6)


def test_no_tokens_means_no_price_per_token() -> None:
    state = advance(start(at("2026-11-10 12:00:00")), at("2026-11-10 12:10:00"), [H100], {}, 900).state
    assert state.current.usd_per_million_output_tokens is None


def test_a_long_outage_is_charged_only_up_to_the_allowed_gap() -> None:
    state = start(at("2026-11-10 12:00:00"))
    step = advance(state, at("2026-11-10 15:00:00"), [H100], None, max_gap_seconds=900)
    assert step.state.current.local.gpu_hours == pytest.approx(0.25)
    assert step.uncounted_seconds == pytest.approx(3 * 3600 - 900)


def test_the_month_rolls_over_at_midnight_utc_and_splits_the_interval() -> None:
    state = advance(
        start(at("2026-11-30 23:00:00")), at("2026-11-30 23:30:00"), [H100], {"pod-a": 10.0}, 7200
    ).state
    state = advance(state, at("2026-12-01 00:30:00"), [H100], {"pod-a": 30.0}, 7200).state
    assert state.previous is not None and state.previous.month == "2026-11"
    assert state.previous.local.gpu_hours == pytest.approx(1.0)  # 23:00 to midnight
    assert state.current.month == "2026-12"
    assert state.current.local.gpu_hours == pytest.approx(0.5)
    assert state.current.output_tokens == 20  # growth after the rollover


def test_status_round_trip_keeps_the_meter_across_restarts() -> None:
    state = advance(
        start(at("2026-11-10 12:00:00"), {"pod-a": 7.0}),
        at("2026-11-10 12:00:30.25"),
        [H100],
        {"pod-a": 9.0},
        900,
    ).state
    wire = status_from_state(state, examples=True)
    assert wire["pricesAreExamples"] is True and wire["month"] == "2026-11"
    assert wire["lastUpdateTime"] == "2026-11-10T12:00:30.250000Z"
    assert wire["engineCounters"] == [{"pod": "pod-a", "outputTokens": 9.0}]
    again = state_from_status(wire)
    assert again is not None
    assert again.last_seconds == pytest.approx(state.last_seconds)
    assert again.current.output_tokens == 9 and again.counters == {"pod-a": 9.0}
    assert again.current.local.gpu_hours == pytest.approx(state.current.local.gpu_hours, abs=1e-6)
    assert state_from_status({"month": "garbage"}) is None


def test_only_pods_bound_to_a_node_hold_gpus_at_their_products_price() -> None:
    spec = LLMServeSpec.model_validate(
        {"model": {"name": "m"}, "resources": {"gpus": 2, "gpuProduct": "NVIDIA-L4"}}
    )
    pods = [
        {"metadata": {"name": "running"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}},
        {"metadata": {"name": "pending"}, "spec": {"nodeName": None}, "status": {"phase": "Pending"}},
        {"metadata": {"name": "done"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}},
    ]
    holders = local_holders(spec, pods, price_book({}))
    assert holders == [Holder("running", "local", 2, EXAMPLE_USD_PER_GPU_HOUR["NVIDIA-L4"])]


def test_prices_come_from_the_environment_and_examples_are_labelled() -> None:
    assert price_book({}).are_examples
    book = price_book({"LLMSERVE_GPU_USD_PER_HOUR": '{"NVIDIA-H100-80GB-HBM3": 2.5, "default": 1}'})
    assert not book.are_examples and book.price("NVIDIA-H100-80GB-HBM3") == 2.5 and book.price("other") == 1
    flagged = price_book(
        {"LLMSERVE_GPU_USD_PER_HOUR": '{"default": 1}', "LLMSERVE_GPU_PRICES_ARE_EXAMPLES": "true"}
    )
    assert flagged.are_examples
    with pytest.raises(PriceError, match=r"LLMSERVE_GPU_USD_PER_HOUR\['x'\] = -1"):
        price_book({"LLMSERVE_GPU_USD_PER_HOUR": '{"x": -1}'})
    with pytest.raises(PriceError, match="not JSON"):
        price_book({"LLMSERVE_GPU_USD_PER_HOUR": "cheap"})


def test_generation_counter_is_read_from_vllm_text() -> None:
    text = (
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{engine="0",model_name="m"} 1234.0\n'
        'vllm:generation_tokens_total{engine="1",model_name="m"} 66.0\n'
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 99999.0\n'
    )
    assert parse_generation_tokens(text) == 1300.0
    with pytest.raises(CounterFormatError, match="no vllm:generation_tokens_total"):
        parse_generation_tokens("up 1\n")
