"""Tokens metered from Responses API and Anthropic Messages answers, whole and streamed."""

from __future__ import annotations

import json

from llmserve.gateway.usage import SseUsageTap, Usage, usage_from_body


def event(kind: str, payload: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


RESPONSES_STREAM = [
    event("response.created", {"response": {"id": "resp_1", "status": "in_progress", "usage": None}}),
    event("response.output_text.delta", {"delta": "Hi"}),
    event(
        "response.completed",
        {"response": {"id": "resp_1", "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}}},
    ),
]
ANTHROPIC_STREAM = [
    event("message_start", {"message": {"id": "msg_1", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
    event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
    event("message_stop", {}),
]


def tapped(chunks: list[bytes], size: int) -> tuple[bytes, Usage | None]:
    stream = b"".join(chunks)
    tap = SseUsageTap()
    out = b"".join(tap.feed(stream[i : i + size]) for i in range(0, len(stream), size)) + tap.flush()
    return out, tap.usage


def test_responses_api_usage_of_a_whole_answer() -> None:
    body = {"object": "response", "usage": {"input_tokens": 20, "output_tokens": 7, "total_tokens": 27}}
    assert usage_from_body(json.dumps(body).encode()) == Usage(20, 7)


def test_responses_api_stream_is_metered_from_its_completed_event_whatever_the_boundaries() -> None:
    for size in (1, 7, 10_000):
        out, usage = tapped(RESPONSES_STREAM, size)
        assert out == b"".join(RESPONSES_STREAM) and usage == Usage(12, 3), size


def test_anthropic_stream_takes_input_from_message_start_and_output_from_message_delta() -> None:
    for size in (1, 13, 10_000):
        out, usage = tapped(ANTHROPIC_STREAM, size)
        assert out == b"".join(ANTHROPIC_STREAM) and usage == Usage(9, 5), size


def test_anthropic_cached_prompt_tokens_still_count_as_prompt() -> None:
    body = {
        "type": "message",
        "usage": {
            "input_tokens": 4,
            "cache_read_input_tokens": 90,
            "cache_creation_input_tokens": 6,
            "output_tokens": 2,
        },
    }
    assert usage_from_body(json.dumps(body).encode()) == Usage(100, 2)


def test_usage_with_counts_that_are_not_integers_is_not_trusted() -> None:
    # Not trusted means None: the gateway then charges the request's reservation (metering.py).
    body = {"usage": {"input_tokens": "12", "output_tokens": True}}
    assert usage_from_body(json.dumps(body).encode()) is None


def test_a_caller_schema_holding_usage_null_cannot_hide_a_streamed_responses_usage() -> None:
    # Responses events echo the request's text format and tools; a schema there may say "usage": null.
    schema = {"format": {"type": "json_schema", "schema": {"properties": {"usage": None}}}}
    chunks = [
        event("response.created", {"response": {"text": schema, "usage": None}}),
        event(
            "response.completed",
            {"response": {"text": schema, "usage": {"input_tokens": 8, "output_tokens": 2}}},
        ),
    ]
    for size in (3, 10_000):
        _, usage = tapped(chunks, size)
        assert usage == Usage(8, 2), size
