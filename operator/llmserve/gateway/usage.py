"""Token usage from OpenAI, Responses API and Anthropic answers, streamed (SSE, any chunking) or not (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_EVENT_END = b"\n\n"
_NULL_USAGE = (b'"usage":null', b'"usage": null')
_USAGE_OBJECT = (b'"usage":{', b'"usage": {')


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Where the usage object sits: top level (chat, completions, embeddings, Responses and Anthropic
# answers, Anthropic's message_delta), or inside the object a stream event carries (the Responses API's
# response.completed / response.incomplete, Anthropic's message_start).
_USAGE_CONTAINERS = ("response", "message")
# Anthropic counts cached prompt tokens apart from input_tokens; they were still part of the prompt.
_EXTRA_PROMPT_FIELDS = ("cache_read_input_tokens", "cache_creation_input_tokens")


# Above this, a usage number is a broken or hostile backend: not trusted (see metering.py).
MAX_PLAUSIBLE_TOKENS = 100_000_000


class _Implausible(ValueError):
    """A usage count that is negative, absurd or not an integer: the whole usage object is not trusted."""


def _count(usage: dict[str, Any], *fields: str) -> int | None:
    for name in fields:
        value = usage.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PLAUSIBLE_TOKENS:
            raise _Implausible(name)
        return value
    return None


def _partial_usage_of(payload: Any) -> tuple[int | None, int | None] | None:
    """(prompt, completion) tokens from an answer or stream event in any of the three formats; a count
    the object does not carry is None (Anthropic's message_start has no final output count)."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        inner = [payload.get(name) for name in _USAGE_CONTAINERS]
        usage = next(
            (i["usage"] for i in inner if isinstance(i, dict) and isinstance(i.get("usage"), dict)), None
        )
        if usage is None:
            return None
    prompt = _count(usage, "prompt_tokens", "input_tokens")
    if prompt is not None:
        prompt += sum(_count(usage, name) or 0 for name in _EXTRA_PROMPT_FIELDS)
    return prompt, _count(usage, "completion_tokens", "output_tokens")


def usage_of(payload: Any, previous: Usage | None = None) -> Usage | None:
    """Usage of a decoded answer or stream event; None when absent or not believable."""
    try:
        partial = _partial_usage_of(payload)
    except _Implausible:
        return None
    if partial is None:
        return None
    base = previous or Usage()
    prompt, completion = partial
    return Usage(
        base.prompt_tokens if prompt is None else prompt,
        base.completion_tokens if completion is None else completion,
    )


_usage_of = usage_of


def usage_from_body(body: bytes) -> Usage | None:
    """Usage of a non-streamed JSON response, or None when it has none (or is not JSON)."""
    if b'"usage"' not in body:
        return None
    try:
        return _usage_of(json.loads(body))
    except ValueError:
        return None


class SseUsageTap:
    """Watches an SSE stream for the usage chunk while passing the stream on.

    With `strip_usage_chunk` (the gateway asked the engine for usage on the client's behalf) the
    usage-only chunk is removed, so the client sees exactly the stream it asked for; bytes are then
    forwarded event by event. Otherwise every chunk is forwarded the moment it arrives.
    """

    def __init__(self, strip_usage_chunk: bool = False) -> None:
        self.strip_usage_chunk = strip_usage_chunk
        self.usage: Usage | None = None
        self.events = 0
        self.content_events = 0
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Takes upstream bytes; returns the bytes to send to the client now."""
        buffer = self._pending + chunk
        end = buffer.rfind(_EVENT_END)
        if end < 0:
            self._pending = buffer
            return b"" if self.strip_usage_chunk else chunk
        complete, self._pending = buffer[: end + 2], buffer[end + 2 :]
        if not self.strip_usage_chunk:
            for event in complete.split(_EVENT_END)[:-1]:
                self._inspect(event)
            return chunk
        kept = [event for event in complete.split(_EVENT_END)[:-1] if not self._inspect(event)]
        return b"".join(event + _EVENT_END for event in kept)

    def flush(self) -> bytes:
        """Bytes still held at the end of the stream (an unterminated last event)."""
        rest, self._pending = self._pending, b""
        if not rest:
            return b""
        strip = self._inspect(rest)
        if not self.strip_usage_chunk:
            return b""  # already forwarded as it arrived
        return b"" if strip else rest

    def _inspect(self, event: bytes) -> bool:
        """Records usage found in one event; True when it is a usage-only chunk to strip."""
        self.events += 1
        # A token-carrying event: not the role-only first chat chunk, the usage-only chunk or [DONE].
        if b"[DONE]" not in event and b'"choices":[]' not in event and b'"role"' not in event:
            self.content_events += 1
        if b'"usage"' not in event:
            return False
        # Skip events whose usage is null, unless a usage object is there too: a caller-supplied JSON
        # schema or tool echoed in every Responses event may hold `"usage": null`, and must not hide
        # the real usage of response.completed from metering.
        if any(null in event for null in _NULL_USAGE) and not any(o in event for o in _USAGE_OBJECT):
            return False
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            try:
                payload = json.loads(line[5:])
            except ValueError:
                continue
            usage = _usage_of(payload, self.usage)
            if usage is not None:
                self.usage = usage
                return self.strip_usage_chunk and payload.get("choices") == []
        return False
