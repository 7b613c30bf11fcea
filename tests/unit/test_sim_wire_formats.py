"""The simulator's Responses API and Anthropic Messages request checks and event sequences (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmserve.sim.anthropic_api import (
    MessagesStreamEncoder,
    anthropic_error,
    count_tokens,
    parse_messages_request,
)
from llmserve.sim.openai_api import ApiError
from llmserve.sim.responses_api import ResponsesStreamEncoder, parse_responses_request
from llmserve.sim.tokens import chat_prompt_tokens

NAMES = ["llama"]


def events(raw: bytes) -> list[dict[str, Any]]:
    blocks = [b for b in raw.decode().split("\n\n") if b]
    parsed = []
    for block in blocks:
        kind, data = block.split("\n")
        assert kind.startswith("event: ")
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == kind.removeprefix("event: ")
        parsed.append(payload)
    return parsed


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "llama"}, "input"),
        ({"model": "llama", "input": ""}, "input"),
        ({"model": "llama", "input": ["x"]}, "input"),
        ({"model": "llama", "input": "x", "instructions": 5}, "instructions"),
        ({"model": "llama", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "llama", "input": "x", "stream": 1}, "stream"),
        ({"model": "llama", "input": "x", "background": True}, "background"),
        ({"model": "llama", "input": "x", "request_id": 7}, "request_id"),
        ({"model": "gpt", "input": "x"}, "model"),
        ({"model": "llama", "input": "x" * 400}, "input"),
    ],
)
def test_bad_responses_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_responses_request(body, NAMES, max_model_len=64, store_enabled=False)
    assert err.value.param == param
    assert err.value.status == (404 if param == "model" else 400)  # an unknown model is vLLM's 404


def test_a_responses_request_becomes_chat_messages_and_keeps_the_callers_id() -> None:
    body = {
        "model": "llama", "instructions": "Be brief.", "request_id": "resp_abc",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
    }  # fmt: skip
    parsed, prompt_tokens = parse_responses_request(body, NAMES, 1000, store_enabled=True)
    assert parsed.response_id == "resp_abc" and parsed.store
    assert prompt_tokens == chat_prompt_tokens(parsed.messages) and len(parsed.messages) == 2
    unstored, _ = parse_responses_request({"input": "x"}, NAMES, 1000, store_enabled=False)
    assert not unstored.store and unstored.model == "llama" and unstored.response_id.startswith("resp_")


def test_a_streamed_response_follows_vllms_event_order_with_numbered_events() -> None:
    parsed, _ = parse_responses_request({"input": "x"}, NAMES, 1000, store_enabled=False)
    encoder = ResponsesStreamEncoder(parsed, max_output_tokens=2)
    raw = encoder.start() + encoder.delta("Hello") + encoder.delta(" there")
    closing, final = encoder.finish("length", input_tokens=11, output_tokens=2)
    stream = events(raw + closing)
    assert [e["type"] for e in stream] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.incomplete",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in stream] == list(range(10))
    assert stream[0]["response"]["usage"] is None and stream[-1]["response"] == final
    assert final["usage"]["input_tokens"] == 11 and final["output"][0]["content"][0]["text"] == "Hello there"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}, "model"),
        ({"model": "llama", "max_tokens": 1}, "messages"),
        ({"model": "llama", "messages": [{"role": "system", "content": "x"}], "max_tokens": 1}, "messages"),
        ({"model": "llama", "messages": [{"role": "user", "content": 5}], "max_tokens": 1}, "messages"),
        ({"model": "llama", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "llama", "messages": [{"role": "user", "content": "x"}], "max_tokens": 999}, "max_tokens"),
        (
            {"model": "llama", "system": 5, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
            "system",
        ),
    ],
)
def test_bad_messages_requests_name_the_field_in_anthropics_shape(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_messages_request(body, NAMES, max_model_len=64)
    assert err.value.param == param
    shaped = anthropic_error(err.value)
    assert shaped["type"] == "error" and shaped["error"]["type"] == "invalid_request_error"


def test_a_streamed_message_reports_input_first_and_output_last() -> None:
    body = {
        "model": "llama",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
    }
    parsed, prompt_tokens = parse_messages_request(body, NAMES, max_model_len=1000)
    assert count_tokens(body, NAMES) == {"input_tokens": prompt_tokens}
    encoder = MessagesStreamEncoder(parsed, prompt_tokens)
    stream = events(encoder.start() + encoder.delta("a") + encoder.finish("length", 3))
    assert [e["type"] for e in stream] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert stream[0]["message"]["usage"] == {"input_tokens": prompt_tokens, "output_tokens": 0}
    assert stream[4]["usage"]["output_tokens"] == 3 and stream[4]["delta"]["stop_reason"] == "max_tokens"


def test_pooling_answers_are_deterministic_and_shaped_like_vllms() -> None:
    from llmserve.sim.pooling_api import embeddings, rerank, score

    first = embeddings({"model": "llama", "input": ["a", "b"]}, NAMES)
    again = embeddings({"input": "a", "dimensions": 8}, NAMES)
    assert [d["index"] for d in first["data"]] == [0, 1] and first["usage"]["prompt_tokens"] == 4
    assert first["data"][0]["embedding"][:8] != again["data"][0]["embedding"]  # renormalised at 8
    assert len(again["data"][0]["embedding"]) == 8
    pairs = score({"queries": "q", "documents": ["q", "z"]}, NAMES)["data"]
    assert pairs[0]["score"] == pytest.approx(1.0) and 0 <= pairs[1]["score"] < 1
    ranked = rerank({"query": "q", "documents": ["z", "q"], "top_n": 1}, NAMES)
    assert [r["index"] for r in ranked["results"]] == [1]
    with pytest.raises(ApiError) as err:
        score({"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, NAMES)
    assert err.value.param == "text_1"
