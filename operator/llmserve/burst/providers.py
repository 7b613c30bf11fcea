"""Builds a Provider client from a pool's provider kind and credentials (the one place that knows them all)."""

from __future__ import annotations

from collections.abc import Sequence

from llmserve.burst import runpod, vastai
from llmserve.burst.runpod import DEFAULT_PROXY_URL_TEMPLATE, RunPodProvider
from llmserve.burst.static import StaticEndpoint, StaticProvider
from llmserve.burst.types import Provider
from llmserve.burst.vastai import VastProvider

PROVIDER_KINDS = ("runpod", "vastai", "static")


def build_provider(
    kind: str,
    api_key: str = "",
    *,
    base_url: str | None = None,
    proxy_url_template: str | None = None,
    static_endpoints: Sequence[StaticEndpoint] = (),
    timeout_seconds: float = 20.0,
    pacing_scale: float = 1.0,
) -> Provider:
    """A client for `kind`; `base_url`/`proxy_url_template` point it at a fake provider in tests, and
    `pacing_scale` shortens the documented minimum intervals between calls for it (Vast.ai's)."""
    if kind == "runpod":
        return RunPodProvider(
            api_key,
            timeout_seconds=timeout_seconds,
            proxy_url_template=proxy_url_template or DEFAULT_PROXY_URL_TEMPLATE,
            base_url=base_url or runpod.DEFAULT_BASE_URL,
        )
    if kind == "vastai":
        intervals = {k: v * pacing_scale for k, v in vastai.DOCUMENTED_MIN_INTERVAL_SECONDS.items()}
        return VastProvider(
            api_key,
            timeout_seconds=timeout_seconds,
            base_url=base_url or vastai.DEFAULT_BASE_URL,
            min_interval_seconds=intervals,
        )
    if kind == "static":
        if not static_endpoints:
            raise ValueError("provider static needs at least one endpoint")
        return StaticProvider(static_endpoints)
    raise ValueError(f"provider must be one of {', '.join(PROVIDER_KINDS)}, got {kind!r}")
