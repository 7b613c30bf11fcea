"""Continuous-batching timing model: admission, queueing, KV cache, preemption, chunked prefill, timing."""

from __future__ import annotations

import dataclasses

import pytest

from llmserve.sim.batching import Engine, EngineConfig, FinishReason, StepResult
from llmserve.sim.profiles import GIB, Efficiency, Profile, resolve_profile
from llmserve.sim.virtual import Arrival, replay, run_closed_loop

H100_8B = resolve_profile("NVIDIA-H100-80GB-HBM3", "meta-llama/Llama-3.1-8B-Instruct")


def profile_with_kv_tokens(kv_tokens: int) -> Profile:
    """The H100 8B profile on a GPU just big enough for the weights plus `kv_tokens` of KV cache."""
    base = dataclasses.replace(
        H100_8B, gpu_memory_utilization=1.0, efficiency=Efficiency(activation_reserve_bytes=0)
    )
    memory = base.weight_bytes_per_gpu + (kv_tokens + 0.5) * base.kv_bytes_per_token_per_gpu
    return dataclasses.replace(base, gpu=dataclasses.replace(base.gpu, memory_bytes=int(memory)))


def run_until_idle(engine: Engine, now: float = 0.0, limit: int = 10_000) -> list[StepResult]:
    results: list[StepResult] = []
    for _ in range(limit):
        if not engine.has_work:
            return results
        result = engine.step(now)
        results.append(result)
        now = result.end_time
    raise AssertionError("engine did not drain")


def test_admits_at_most_max_num_seqs_and_queues_the_rest() -> None:
    engine = Engine(H100_8B, EngineConfig(max_num_seqs=4))
    for i in range(6):
        engine.submit(f"r{i}", prompt_tokens=100, max_output_tokens=10, now=0.0)
    engine.step(0.0)
    assert engine.num_running == 4
    assert engine.num_waiting == 2


def test_waiting_requests_are_admitted_first_come_first_served_when_a_slot_frees() -> None:
    engine = Engine(H100_8B, EngineConfig(max_num_seqs=2))
    engine.submit("short", prompt_tokens=10, max_output_tokens=1, now=0.0)
    engine.submit("long", prompt_tokens=10, max_output_tokens=50, now=0.0)
    engine.submit("third", prompt_tokens=10, max_output_tokens=5, now=0.0)
    engine.submit("fourth", prompt_tokens=10, max_output_tokens=5, now=0.0)
    first = engine.step(0.0)
    assert first.finished_ids == ["short"]
    second = engine.step(first.end_time)
    assert "third" in second.first_token_ids
    assert engine.num_running == 2 and engine.num_waiting == 1


def test_kv_usage_rises_with_context_length() -> None:
    engine = Engine(H100_8B, EngineConfig())
    engine.submit("a", prompt_tokens=1000, max_output_tokens=500, now=0.0)
    usages = []
    now = 0.0
    for _ in range(100):
        now = engine.step(now).end_time
        usages.append(engine.kv_usage_fraction)
    assert usages == sorted(usages)
    assert usages[-1] > usages[0] > 0

    longer = Engine(H100_8B, EngineConfig())
    longer.submit("b", prompt_tokens=20_000, max_output_tokens=500, now=0.0)
    for _ in range(5):
        longer.step(0.0)
    assert longer.kv_usage_fraction > 10 * usages[0]


def test_kv_usage_returns_to_zero_when_requests_finish() -> None:
    engine = Engine(H100_8B, EngineConfig())
    engine.submit("a", prompt_tokens=300, max_output_tokens=3, now=0.0)
    run_until_idle(engine)
    assert engine.kv_usage_fraction == 0.0


def test_preempts_the_newest_request_when_the_kv_cache_runs_out() -> None:
    # 8 blocks of 16 tokens: two requests of 32 prompt tokens fit, but not once both have grown.
    engine = Engine(profile_with_kv_tokens(128), EngineConfig(block_size=16))
    assert engine.total_kv_blocks == 8
    engine.submit("old", prompt_tokens=32, max_output_tokens=60, now=0.0)
    engine.submit("new", prompt_tokens=32, max_output_tokens=60, now=0.0)
    results = run_until_idle(engine)
    preempted = [rid for r in results for rid in r.preempted_ids]
    assert preempted and set(preempted) == {"new"}
    assert engine.num_preemptions_total == len(preempted)
    finished = [f for r in results for f in r.finished]
    assert [f.request_id for f in finished] == ["old", "new"]
    assert all(f.output_tokens == 60 for f in finished)
    assert finished[1].num_preemptions == len(preempted)


def test_a_step_that_preempts_admits_no_new_request() -> None:
    engine = Engine(profile_with_kv_tokens(128), EngineConfig(block_size=16))
    engine.submit("old", prompt_tokens=32, max_output_tokens=60, now=0.0)
    engine.submit("new", prompt_tokens=32, max_output_tokens=60, now=0.0)
    now = 0.0
    while True:
        result = engine.step(now)
        now = result.end_time
        if result.preempted_ids:
            break
    assert engine.num_running == 1 and engine.num_waiting == 1


def test_chunked_prefill_never_exceeds_the_token_budget() -> None:
    engine = Engine(H100_8B, EngineConfig(max_num_batched_tokens=100))
    engine.submit("big", prompt_tokens=250, max_output_tokens=2, now=0.0)
    steps = [engine.step(0.0) for _ in range(3)]
    assert [s.num_prefill_tokens for s in steps] == [100, 100, 50]
    assert [s.first_token_ids for s in steps] == [[], [], ["big"]]


def test_decodes_share_the_token_budget_with_prefill_chunks() -> None:
    engine = Engine(H100_8B, EngineConfig(max_num_batched_tokens=64))
    engine.submit("decoder", prompt_tokens=10, max_output_tokens=20, now=0.0)
    engine.step(0.0)
    engine.submit("prefiller", prompt_tokens=500, max_output_tokens=2, now=0.0)
    step = engine.step(0.0)
    assert step.num_decode_tokens == 1
    assert step.num_prefill_tokens == 63


def test_decode_step_time_is_weights_plus_kv_over_effective_bandwidth_plus_overhead() -> None:
    engine = Engine(H100_8B, EngineConfig())
    engine.submit("a", prompt_tokens=1000, max_output_tokens=10, now=0.0)
    prefill = engine.step(0.0)
    decode = engine.step(prefill.end_time)
    context = 1001  # the 1000 prompt tokens and the token being decoded
    weights = 8.03e9 * 2
    kv_per_token = 32 * 8 * 128 * 2 * 2
    expected = 0.0015 + 0.000030 + (weights + context * kv_per_token) / (3.35e12 * 0.80)
    assert decode.duration_seconds == pytest.approx(expected, rel=1e-9)
    assert decode.inter_token_seconds == [pytest.approx(decode.duration_seconds)]


def test_large_batches_become_compute_bound() -> None:
    profile = H100_8B
    memory_only = profile.memory_seconds(context_tokens=0)
    big_prefill = profile.step_seconds(
        num_sequences=1, context_tokens=8192, prefill_tokens=8192, decode_tokens=0
    )
    assert big_prefill > 5 * memory_only
    assert big_prefill == pytest.approx(0.0015 + 0.000030 + profile.compute_seconds(8192))


def test_identical_inputs_give_identical_timelines() -> None:
    arrivals = [
        Arrival(f"r{i}", arrival_time=i * 0.003, prompt_tokens=100 + 37 * i, max_output_tokens=50)
        for i in range(40)
    ]
    config = EngineConfig(max_num_seqs=8, max_num_batched_tokens=512)
    assert replay(H100_8B, config, arrivals) == replay(H100_8B, config, arrivals)


def test_token_accounting_counts_each_prompt_once_and_every_generated_token() -> None:
    engine = Engine(profile_with_kv_tokens(128), EngineConfig(block_size=16))
    engine.submit("old", prompt_tokens=32, max_output_tokens=60, now=0.0)
    engine.submit("new", prompt_tokens=32, max_output_tokens=60, now=0.0)
    results = run_until_idle(engine)
    assert sum(r.num_prompt_tokens for r in results) == 64  # despite the recompute after preemption
    assert sum(r.num_generation_tokens for r in results) == 120
    assert sum(len(r.time_to_first_token_seconds) for r in results) == 2
    assert sum(len(r.inter_token_seconds) for r in results) == 118


def test_a_request_stops_early_when_its_natural_length_is_shorter_than_max_tokens() -> None:
    engine = Engine(H100_8B, EngineConfig())
    engine.submit("eos", prompt_tokens=10, max_output_tokens=100, now=0.0, stop_after_tokens=7)
    engine.submit("cap", prompt_tokens=10, max_output_tokens=5, now=0.0, stop_after_tokens=7)
    finished = {f.request_id: f for r in run_until_idle(engine) for f in r.finished}
    assert (finished["eos"].finish_reason, finished["eos"].output_tokens) == (FinishReason.STOP, 7)
    assert (finished["cap"].finish_reason, finished["cap"].output_tokens) == (FinishReason.LENGTH, 5)


def test_cancel_frees_the_slot_and_its_kv_blocks() -> None:
    engine = Engine(H100_8B, EngineConfig(max_num_seqs=1))
    engine.submit("a", prompt_tokens=5000, max_output_tokens=100, now=0.0)
    engine.submit("b", prompt_tokens=10, max_output_tokens=100, now=0.0)
    engine.step(0.0)
    assert engine.num_running == 1 and engine.kv_usage_fraction > 0
    assert engine.cancel("a") and engine.cancel("b")
    assert (engine.num_running, engine.num_waiting, engine.kv_usage_fraction) == (0, 0, 0.0)
    assert not engine.cancel("a")


def test_rejects_a_request_that_could_never_fit_in_the_kv_cache() -> None:
    engine = Engine(profile_with_kv_tokens(128), EngineConfig())
    with pytest.raises(ValueError, match="KV cache capacity"):
        engine.submit("huge", prompt_tokens=100, max_output_tokens=100, now=0.0)


def test_closed_loop_throughput_rises_with_concurrency_and_saturates() -> None:
    config = EngineConfig()
    low, mid, high = (
        run_closed_loop(H100_8B, config, c, 200, 200, measured_requests=50) for c in (1, 32, 256)
    )
    assert low.output_tokens_per_second < mid.output_tokens_per_second < high.output_tokens_per_second
    assert high.mean_inter_token_seconds > low.mean_inter_token_seconds
    assert high.output_tokens_per_second / mid.output_tokens_per_second < 256 / 32


def test_the_kv_cache_of_llama_8b_on_an_h100_holds_about_450k_tokens() -> None:
    assert H100_8B.kv_bytes_per_token == 128 * 1024
    assert 400_000 < H100_8B.kv_capacity_tokens < 500_000
    assert H100_8B.kv_cache_bytes_per_gpu == pytest.approx(81559 * 1024**2 * 0.9 - 8.03e9 * 2 - 2 * GIB)
