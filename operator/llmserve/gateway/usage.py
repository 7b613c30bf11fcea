"""Token usage from OpenAI responses, including server-sent event streams read chunk by chunk (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_EVENT_END = b"\n\n"
_NULL_USAGE = (b'"usage":null', b'"usage": null')


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Above this, a usage number is a broken or hostile backend: not trusted (see metering.py).
MAX_PLAUSIBLE_TOKENS = 100_000_000


def usage_of(payload: Any) -> Usage | None:
    """Usage of a decoded answer; None when absent or not believable (negative, absurd, not an int)."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name, 0)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PLAUSIBLE_TOKENS:
            return None
        counts.append(value)
    return Usage(counts[0], counts[1])


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
        if b'"usage"' not in event or any(null in event for null in _NULL_USAGE):
            return False
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            try:
                payload = json.loads(line[5:])
            except ValueError:
                continue
            usage = _usage_of(payload)
            if usage is not None:
                self.usage = usage
                return self.strip_usage_chunk and payload.get("choices") == []
        return False
