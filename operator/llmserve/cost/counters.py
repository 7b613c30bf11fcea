"""Reads an engine's output-token counter (vllm:generation_tokens_total) from its Prometheus text."""

from __future__ import annotations

from llmserve.engine_metrics import MetricsFormatError, read_page
from llmserve.engine_metrics_names import GENERATION_TOKENS

__all__ = ["GENERATION_TOKENS", "CounterFormatError", "parse_generation_tokens"]


class CounterFormatError(MetricsFormatError):
    """The page was read but carries no output-token counter."""


def parse_generation_tokens(text: str) -> float:
    """Sum over the engine's series (data-parallel engines export one each), by llmserve.engine_metrics."""
    try:
        total = read_page(text, (GENERATION_TOKENS,)).total(f"{GENERATION_TOKENS}_total")
    except MetricsFormatError as err:
        raise CounterFormatError(str(err)) from err
    if total is None:
        raise CounterFormatError(f"no {GENERATION_TOKENS}_total counter: is this a vLLM engine?")
    return total
