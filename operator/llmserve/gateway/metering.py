"""Metering rules that a client cannot dodge (pure): what counts as a stream, and which usage
numbers from a backend are believable."""

from __future__ import annotations

# Strings vLLM's pydantic bool reads as false; every other truthy value makes vLLM stream.
_FALSE_STRINGS = {"", "0", "off", "f", "false", "n", "no"}


def wants_stream(value: object) -> bool:
    """True whenever the engine would stream: `true`, but also `1`, `"yes"`, `"true"`, … (pydantic's
    lax bool), so a client cannot get a stream metered as a non-stream by spelling `stream` oddly."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)
