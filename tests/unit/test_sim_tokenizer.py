"""The simulator's tokenizer round-trips text and counts exactly what its usage figures count."""

from __future__ import annotations

from llmserve.sim.tokenizer import decode, encode_chat, encode_prompt, encode_text
from llmserve.sim.tokens import chat_prompt_tokens, completion_prompt_tokens


def test_text_round_trips_including_accents_and_ragged_ends() -> None:
    for text in ("", "a", "Hello, world", "été à Paris — 25°C", "x" * 4001):
        assert decode(encode_text(text)) == text


def test_prompt_ids_count_like_the_completions_usage() -> None:
    for prompt in ("a", "Once upon a time", "y" * 33):
        ids = encode_prompt(prompt)
        assert len(ids) == completion_prompt_tokens(prompt)
        assert decode(ids) == "<|begin_of_text|>" + prompt
        assert len(encode_prompt(prompt, add_special_tokens=False)) == len(ids) - 1


def test_chat_ids_count_like_the_chat_usage() -> None:
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi there"}]},
        {"role": "critic", "content": "odd role"},
    ]
    assert len(encode_chat(messages)) == chat_prompt_tokens(messages)
    assert decode(encode_chat(messages[:1], add_generation_prompt=False)) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    )


def test_ids_stay_within_vllms_range_and_unknown_ids_decode_to_a_replacement_character() -> None:
    ids = encode_text("\U0001f600\U0001f600ab")  # beyond the 15-bit range
    assert all(0 <= i <= 2**63 - 1 for i in ids)
    assert decode(ids) == "\ufffd\ufffdab"
    assert decode([5]) == "\ufffd"
