"""Token accounting without a tokenizer: prompt estimates, filler text, and output-length draws."""

from __future__ import annotations

import pytest

from llmserve.sim.tokens import (
    OutputLengthDistribution,
    OutputLengthSampler,
    chat_prompt_tokens,
    completion_prompt_tokens,
    filler_text,
    filler_token,
)


def test_prompt_tokens_grow_with_text_at_about_four_characters_per_token() -> None:
    short = chat_prompt_tokens([{"role": "user", "content": "hi"}])
    long = chat_prompt_tokens([{"role": "user", "content": "x" * 4000}])
    assert short >= 1
    assert long - short == pytest.approx(1000, abs=1)


def test_each_chat_message_adds_template_overhead_and_parts_are_read() -> None:
    one = chat_prompt_tokens([{"role": "user", "content": "abcd"}])
    two = chat_prompt_tokens(
        [{"role": "system", "content": ""}, {"role": "user", "content": [{"type": "text", "text": "abcd"}]}]
    )
    assert two == one + 5


def test_completion_prompts_count_token_ids_one_each() -> None:
    assert completion_prompt_tokens([1, 2, 3]) == 3
    assert completion_prompt_tokens("abcdefgh") == 3  # BOS + 2


def test_filler_text_has_exactly_one_word_per_token() -> None:
    text = filler_text(0, 57)
    assert len(text.split()) == 57
    assert filler_text(0, 10) + filler_text(10, 5) == filler_text(0, 15)
    assert not filler_token(0).startswith(" ") and filler_token(1).startswith(" ")


def test_lognormal_lengths_are_reproducible_for_a_seed_and_capped_by_max_tokens() -> None:
    distribution = OutputLengthDistribution.parse("lognormal:200:0.8")
    first, second = OutputLengthSampler(distribution, seed=7), OutputLengthSampler(distribution, seed=7)
    draws = [first.stop_after(150, 10_000) for _ in range(200)]
    assert draws == [second.stop_after(150, 10_000) for _ in range(200)]
    assert draws != [OutputLengthSampler(distribution, seed=8).stop_after(150, 10_000) for _ in range(200)]
    assert all(max_out == 150 for max_out, _ in draws)
    naturals = sorted(stop for _, stop in draws if stop is not None)
    assert 120 < naturals[len(naturals) // 2] < 300


def test_max_tokens_distribution_runs_every_request_to_its_cap() -> None:
    sampler = OutputLengthSampler(OutputLengthDistribution.parse("max_tokens"), seed=0)
    assert sampler.stop_after(64, 10_000) == (64, None)


def test_requests_without_max_tokens_stop_naturally_within_the_context_window() -> None:
    sampler = OutputLengthSampler(OutputLengthDistribution(), seed=0)
    max_out, stop = sampler.stop_after(None, 50)
    assert max_out == 50 and stop is not None and 1 <= stop <= 50


@pytest.mark.parametrize("spec", ["uniform", "lognormal:0:1", "lognormal:5", "max_tokens:3"])
def test_invalid_distributions_are_rejected_with_the_valid_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="lognormal:MEDIAN:SIGMA"):
        OutputLengthDistribution.parse(spec)
