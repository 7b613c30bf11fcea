"""Reads Prometheus text pages in tests: the one place a test turns a /metrics page into numbers."""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample_total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` (e.g. `x_total`, `x_count`) whose labels include `labels`.

    0 when there is none, so a counter that has not been created yet reads as 0. Several matching
    series (per engine, per finish reason, ...) add up.
    """
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def totals_by_name(text: str, split_by: str | None = None) -> dict[str, float]:
    """Every sample name's total; with `split_by`, series carrying that label are keyed `name{value}`."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not math.isfinite(sample.value):
                continue
            split = sample.labels.get(split_by) if split_by else None
            key = f"{sample.name}{{{split}}}" if split else sample.name
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def scrape(
    url: str,
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 5,
) -> str:
    """The page at `url` (never through a proxy: tests only talk to loopback and their own namespaces)."""
    response = httpx.get(url, headers=dict(headers or {}), verify=verify, timeout=timeout, trust_env=False)
    response.raise_for_status()
    return response.text


def scrape_total(url: str, name: str, **labels: str) -> float:
    """`sample_total` of the page at `url`."""
    return sample_total(scrape(url), name, **labels)
