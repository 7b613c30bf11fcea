"""The simulator's automatic prefix caching: block hashes, reuse that skips prefill, sharing, eviction."""

from __future__ import annotations

from llmserve.sim.batching import Engine, EngineConfig, StepResult
from llmserve.sim.prefix_cache import chat_units, completion_units, prompt_block_hashes
from llmserve.sim.tokens import chat_prompt_tokens, completion_prompt_tokens
from tests.unit.test_sim_batching import H100_8B, profile_with_kv_tokens, run_until_idle

BLOCK = 16
SYSTEM = {"role": "system", "content": "You are a meticulous travel agent. " * 60}


def chat(*turns: str) -> list[dict[str, str]]:
    messages = [SYSTEM]
    for index, text in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return messages


def counters(results: list[StepResult]) -> tuple[int, int]:
    return (
        sum(r.num_prefix_cache_query_tokens for r in results),
        sum(r.num_prefix_cache_hit_tokens for r in results),
    )


def ttft(results: list[StepResult]) -> float:
    return next(t for r in results for t in r.time_to_first_token_seconds)


def test_block_units_match_the_token_counts_the_simulator_reports() -> None:
    messages = chat("Plan four days in Lisbon.", "Day 1: Alfama.", "Cheaper, please.")
    assert len(list(chat_units(messages))) == chat_prompt_tokens(messages)
    for prompt in ("Once upon a time", [5, 6, 7, 8]):
        assert len(list(completion_units(prompt))) == completion_prompt_tokens(prompt)


def test_a_later_turn_starts_with_the_blocks_of_the_earlier_turn() -> None:
    turn1 = prompt_block_hashes("chat", {"messages": chat("Plan four days in Lisbon.")}, BLOCK)
    turn2 = prompt_block_hashes(
        "chat", {"messages": chat("Plan four days in Lisbon.", "Day 1: Alfama.", "Cheaper?")}, BLOCK
    )
    other = prompt_block_hashes("chat", {"messages": chat("Explain TCP slow start.")}, BLOCK)
    shared_system_blocks = (1 + 5 + len(SYSTEM["content"]) // 4) // BLOCK
    assert len(turn1) > shared_system_blocks and turn2[: len(turn1) - 1] == turn1[:-1]
    assert other[:shared_system_blocks] == turn1[:shared_system_blocks] and other != turn1


def test_a_repeated_prompt_reuses_its_cached_blocks_skips_their_prefill_and_counts_the_hit() -> None:
    engine = Engine(H100_8B, EngineConfig())
    hashes = prompt_block_hashes("completion", {"prompt": "x" * 16000}, BLOCK)
    prompt_tokens = completion_prompt_tokens("x" * 16000)
    engine.submit("first", prompt_tokens, 4, 0.0, block_hashes=hashes)
    cold = run_until_idle(engine)
    engine.submit("second", prompt_tokens, 4, cold[-1].end_time, block_hashes=hashes)
    warm = run_until_idle(engine, cold[-1].end_time)
    assert counters(cold) == (prompt_tokens, 0)
    hit_tokens = (prompt_tokens - 1) // BLOCK * BLOCK  # never the last token: it is recomputed
    assert counters(warm) == (prompt_tokens, hit_tokens)
    assert sum(r.num_prefill_tokens for r in warm) == prompt_tokens - hit_tokens
    assert ttft(warm) < ttft(cold) / 3
    assert engine.used_kv_blocks == 0  # cached blocks are free blocks that keep their content


def test_concurrent_requests_share_the_blocks_of_a_common_prefix() -> None:
    shared = "s" * 8000
    prompts = [shared + f" question {i} " + "q" * 400 for i in range(4)]

    def used_blocks(enable: bool) -> int:
        engine = Engine(H100_8B, EngineConfig(enable_prefix_caching=enable))
        engine.submit("warm", completion_prompt_tokens(shared), 1, 0.0,
                      block_hashes=prompt_block_hashes("completion", {"prompt": shared}, BLOCK))  # fmt: skip
        now = run_until_idle(engine)[-1].end_time
        for i, prompt in enumerate(prompts):
            hashes = prompt_block_hashes("completion", {"prompt": prompt}, BLOCK)
            engine.submit(f"r{i}", completion_prompt_tokens(prompt), 50, now, block_hashes=hashes)
        engine.step(now)
        return engine.used_kv_blocks

    # Shared: one copy of the prefix plus each request's own ~105-token tail (7-8 blocks).
    shared_blocks = completion_prompt_tokens(shared) // BLOCK
    assert used_blocks(True) <= shared_blocks + 4 * 8 < used_blocks(False) / 3


def test_cached_prefixes_are_evicted_least_recently_freed_first_when_memory_runs_out() -> None:
    engine = Engine(profile_with_kv_tokens(3200), EngineConfig(max_model_len=3200))

    def run(name: str, text: str, now: float) -> tuple[float, tuple[int, int]]:
        hashes = prompt_block_hashes("completion", {"prompt": text}, BLOCK)
        engine.submit(name, completion_prompt_tokens(text), 1, now, block_hashes=hashes)
        results = run_until_idle(engine, now)
        return results[-1].end_time, counters(results)

    now, _ = run("a", "a" * 4000, 0.0)  # ~1000 tokens each: three fit in the 3200-token cache
    now, _ = run("b", "b" * 4000, now)
    now, _ = run("c", "c" * 4000, now)
    now, (_, hit_a) = run("a-again", "a" * 4000, now)
    assert hit_a > 900
    now, _ = run("d", "d" * 4000, now)  # needs room: evicts b, the least recently freed
    now, (_, hit_b) = run("b-again", "b" * 4000, now)
    now, (_, hit_a_later) = run("a-third", "a" * 4000, now)
    assert hit_b == 0 and hit_a_later > 900
    assert engine.used_kv_blocks == 0


def test_with_prefix_caching_off_nothing_is_reused() -> None:
    engine = Engine(H100_8B, EngineConfig(enable_prefix_caching=False))
    hashes = prompt_block_hashes("completion", {"prompt": "x" * 4000}, BLOCK)
    for name in ("a", "b"):
        engine.submit(name, completion_prompt_tokens("x" * 4000), 2, 0.0, block_hashes=hashes)
        results = run_until_idle(engine)
        assert counters(results) == (0, 0)
