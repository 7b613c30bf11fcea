"""Token usage read from JSON answers and from SSE streams split at arbitrary byte boundaries."""

from __future__ import annotations

import json

from llmserve.gateway.usage import SseUsageTap, Usage, usage_from_body


def event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


CHUNKS = [
    event({"choices": [{"delta": {"content": "Hel"}}], "usage": None}),
    event({"choices": [{"delta": {"content": "lo"}}]}),
    event({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}),
    b"data: [DONE]\n\n",
]
STREAM = b"".join(CHUNKS)


def test_usage_of_a_json_answer() -> None:
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}).encode()
    assert usage_from_body(body) == Usage(5, 7)
    assert usage_from_body(b'{"choices": []}') is None
    assert usage_from_body(b'not json with "usage"') is None


def test_a_stream_passes_through_unchanged_and_its_usage_is_recorded() -> None:
    tap = SseUsageTap()
    out = b"".join(tap.feed(chunk) for chunk in CHUNKS) + tap.flush()
    assert out == STREAM
    assert tap.usage == Usage(12, 2)


def test_usage_is_found_whatever_the_byte_boundaries() -> None:
    for size in (1, 3, 7, 50):
        tap = SseUsageTap()
        out = b"".join(tap.feed(STREAM[i : i + size]) for i in range(0, len(STREAM), size)) + tap.flush()
        assert out == STREAM and tap.usage == Usage(12, 2), size


def test_the_usage_chunk_the_client_did_not_ask_for_is_removed_and_still_counted() -> None:
    for size in (1, 5, len(STREAM)):
        tap = SseUsageTap(strip_usage_chunk=True)
        out = b"".join(tap.feed(STREAM[i : i + size]) for i in range(0, len(STREAM), size)) + tap.flush()
        assert out == CHUNKS[0] + CHUNKS[1] + CHUNKS[3], size
        assert tap.usage == Usage(12, 2)


def test_continuous_usage_in_content_chunks_is_kept_and_the_last_value_wins() -> None:
    chunks = [
        event(
            {"choices": [{"delta": {"content": "a"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
        ),
        event(
            {"choices": [{"delta": {"content": "b"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
        ),
    ]
    tap = SseUsageTap(strip_usage_chunk=True)
    assert b"".join(tap.feed(c) for c in chunks) == b"".join(chunks)
    assert tap.usage == Usage(3, 2)


def test_an_unterminated_last_event_is_still_delivered() -> None:
    tap = SseUsageTap(strip_usage_chunk=True)
    assert tap.feed(b'data: {"x": 1}') == b""
    assert tap.flush() == b'data: {"x": 1}'
