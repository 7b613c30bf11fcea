"""OpenAI wire format: validation errors name the field; responses and SSE chunks parse as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmserve.sim.openai_api import ApiError, StreamEncoder, full_response, parse_request

NAMES = ["meta-llama/Llama-3.1-8B-Instruct", "llama"]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "llama", "messages": [{"role": "user", "content": "hello"}], **fields}


def test_a_valid_chat_request_is_parsed_with_its_prompt_size() -> None:
    parsed = parse_request(
        "chat", chat(max_tokens=10, stream=True, stream_options={"include_usage": True}), NAMES, 4096
    )
    assert (parsed.model, parsed.max_tokens, parsed.stream, parsed.include_usage) == ("llama", 10, True, True)
    assert parsed.prompt_tokens > 1


@pytest.mark.parametrize(
    ("kind", "body", "status", "param"),
    [
        ("chat", {"model": "llama"}, 400, "messages"),
        ("chat", chat(messages=[]), 400, "messages"),
        ("completion", {"model": "llama"}, 400, "prompt"),
        ("completion", {"prompt": ["a", "b"]}, 400, "prompt"),
        ("chat", chat(model="gpt-4"), 404, "model"),
        ("chat", chat(max_tokens=0), 400, "max_tokens"),
        ("chat", chat(max_tokens="ten"), 400, "max_tokens"),
        ("chat", chat(max_tokens=5000), 400, "max_tokens"),
        ("chat", chat(n=2), 400, "n"),
        ("chat", chat(stream_options={"include_usage": True}), 400, "stream_options"),
        ("chat", [1, 2], 400, None),
    ],
)
def test_bad_requests_get_the_status_and_field_vllm_reports(
    kind: Any, body: object, status: int, param: str | None
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(kind, body, NAMES, 4096)
    assert (caught.value.status, caught.value.param) == (status, param)
    error = caught.value.body()["error"]
    assert (
        error["code"] == status and error["type"] in ("BadRequestError", "NotFoundError") and error["message"]
    )


def test_a_prompt_longer_than_the_context_window_is_rejected_with_the_sizes() -> None:
    with pytest.raises(ApiError, match="maximum context length is 100 tokens"):
        parse_request("completion", {"prompt": "x" * 1000}, NAMES, 100)


def test_the_model_field_may_be_omitted_and_defaults_to_the_first_served_name() -> None:
    assert parse_request("completion", {"prompt": "hi"}, NAMES, 4096).model == NAMES[0]


def test_stream_chunks_are_valid_openai_json() -> None:
    parsed = parse_request("chat", chat(stream=True, stream_options={"include_usage": True}), NAMES, 4096)
    encoder = StreamEncoder(parsed, "chatcmpl-1")
    events = [
        encoder.role_chunk(),
        encoder.token_chunk(' "quoted"', None),
        encoder.token_chunk(" end", "length"),
    ]
    events.append(encoder.usage_chunk(2))
    decoded = [json.loads(e.removeprefix(b"data: ").strip()) for e in events]
    assert decoded[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert decoded[1]["choices"][0]["delta"]["content"] == ' "quoted"'
    assert decoded[2]["choices"][0]["finish_reason"] == "length"
    assert decoded[3]["choices"] == [] and decoded[3]["usage"]["completion_tokens"] == 2
    assert {d["id"] for d in decoded} == {"chatcmpl-1"} and decoded[0]["object"] == "chat.completion.chunk"
    assert encoder.done() == b"data: [DONE]\n\n"


def test_full_completion_response_reports_usage_that_adds_up() -> None:
    parsed = parse_request("completion", {"prompt": "hello world", "max_tokens": 3}, NAMES, 4096)
    body = full_response(parsed, "cmpl-1", "a b c", "length", 3)
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "a b c"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3
