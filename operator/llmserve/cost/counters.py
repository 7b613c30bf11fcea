"""Reads an engine's output-token counter (vllm:generation_tokens_total) from its Prometheus text."""

from __future__ import annotations

import math
import re

from prometheus_client.parser import text_string_to_metric_families

from llmserve.engine_metrics_names import GENERATION_TOKENS  # the family; its sample has _total

_LINE = re.compile(rf"^(# (TYPE|HELP) )?{re.escape(GENERATION_TOKENS)}(_total)?[ {{]")


class CounterFormatError(ValueError):
    """The page was read but carries no output-token counter."""


def parse_generation_tokens(text: str) -> float:
    """Sum over the engine's series (data-parallel engines export one each)."""
    wanted = "\n".join(line for line in text.splitlines() if _LINE.match(line)) + "\n"
    total, seen = 0.0, False
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if sample.name == f"{GENERATION_TOKENS}_total" and math.isfinite(sample.value):
                    total += sample.value
                    seen = True
    except ValueError as err:
        raise CounterFormatError(f"unparsable metrics: {err}") from err
    if not seen:
        raise CounterFormatError(f"no {GENERATION_TOKENS}_total counter: is this a vLLM engine?")
    return total
