"""Turns a BurstPool's spec and credentials into a Provider client, through burst.providers.build_provider.

build_provider is the one table of provider kinds; this module only adds what a pool says (static
endpoints) and the overrides a test or special install sets in the operator's environment, read once
into its settings (llmserve.settings.burst_overrides): LLMSERVE_BURST_<PROVIDER>_URL (another API base
URL, e.g. the fake provider on loopback), LLMSERVE_BURST_RUNPOD_PROXY_URL_TEMPLATE (RunPod's HTTPS proxy
address, `{pod_id}` and `{port}` filled in), and LLMSERVE_BURST_PLUGIN_<PROVIDER>=module:callable (an
out-of-tree client or a test double), and LLMSERVE_BURST_<PROVIDER>_PACING_SCALE (a factor on the
documented minimum intervals between calls, for a fake provider that has no rate limit; tests use 0.1).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from llmserve.api.burstpool import BurstPoolSpec
from llmserve.burst.providers import build_provider
from llmserve.burst.static import StaticEndpoint
from llmserve.burst.types import ErrorKind, Provider, ProviderError

ProviderConstructor = Callable[[BurstPoolSpec, str], Provider]


def pacing_scale(provider: str, text: str | None) -> float:
    """LLMSERVE_BURST_<PROVIDER>_PACING_SCALE: a factor on the documented minimum intervals between calls
    (Vast.ai's are seconds long), for a fake provider on loopback; 1 (the documented pacing) when unset."""
    name = f"LLMSERVE_BURST_{provider.upper()}_PACING_SCALE"
    raw = text or "1"
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number >= 0, got {raw!r}") from None
    if scale < 0:
        raise ValueError(f"{name} must be a number >= 0, got {raw!r}")
    return scale


def _plugin(target: str | None) -> ProviderConstructor | None:
    """LLMSERVE_BURST_PLUGIN_<PROVIDER>=module:callable swaps in another client (an out-of-tree provider,
    or the in-process test double the cluster tests plug into a real operator process)."""
    if not target:
        return None
    module_name, _, attr = target.partition(":")
    constructor: ProviderConstructor = getattr(importlib.import_module(module_name), attr)
    return constructor


def static_endpoints(spec: BurstPoolSpec, api_key: str) -> list[StaticEndpoint]:
    """A static pool's endpoints; the pool's credentials Secret (if any) holds the key they all accept."""
    return [
        # gpu_type "" matches any query: a static endpoint serves whatever the model asks for.
        StaticEndpoint(url=e.url.rstrip("/"), api_key=api_key, usd_per_hour=e.usd_per_hour, gpu_type="")
        for e in spec.static_endpoints
    ]


def make_provider(
    spec: BurstPoolSpec, api_key: str, overrides: Mapping[str, Mapping[str, str]] | None = None
) -> Provider:
    """A client for the pool's provider. Raises ProviderError(invalid) when the pool cannot have one.
    `overrides` are the settings' burst_providers: by provider, its "url", "proxy_url_template", "pacing_scale", "plugin".

    The key is handed to the client only; it never reaches a log or an exception message here.
    """
    ours = (overrides or {}).get(spec.provider, {})
    plugin = _plugin(ours.get("plugin"))
    if plugin is not None:
        return plugin(spec, api_key)
    try:
        return build_provider(
            spec.provider,
            api_key,
            base_url=ours.get("url"),
            proxy_url_template=ours.get("proxy_url_template"),
            pacing_scale=pacing_scale(spec.provider, ours.get("pacing_scale")),
            static_endpoints=static_endpoints(spec, api_key) if spec.provider == "static" else (),
        )
    except ValueError as err:  # messages name the kind or the field, never the key
        raise ProviderError(ErrorKind.INVALID, str(err), provider=spec.provider) from None
