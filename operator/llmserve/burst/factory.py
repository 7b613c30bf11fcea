"""The one place that turns a BurstPool's provider name into a Provider client."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from llmserve.api.burstpool import BurstPoolSpec
from llmserve.burst.types import ErrorKind, Provider, ProviderError

# provider name -> (module, class). Each class is built as Class(api_key=..., base_url=...) (base_url None
# means the provider's real API). The modules are issue 9's clients; the lead adjusts a name here if a
# client is spelled differently, and nothing else changes.
CLIENTS: dict[str, tuple[str, str]] = {
    "runpod": ("llmserve.burst.runpod", "RunPodProvider"),
    "vastai": ("llmserve.burst.vastai", "VastAIProvider"),
    "static": ("llmserve.burst.static", "StaticProvider"),
}

# Tests and special installs may register a constructor directly (e.g. an in-process test double).
ProviderConstructor = Callable[[BurstPoolSpec, str], Provider]
_registered: dict[str, ProviderConstructor] = {}


def register(provider: str, constructor: ProviderConstructor) -> None:
    _registered[provider] = constructor


def base_url_override(provider: str) -> str | None:
    """LLMSERVE_BURST_<PROVIDER>_URL points a provider at another base URL (the fake provider in tests)."""
    return os.environ.get(f"LLMSERVE_BURST_{provider.upper()}_URL") or None


def _plugin(provider: str) -> ProviderConstructor | None:
    """LLMSERVE_BURST_PLUGIN_<PROVIDER>=module:callable swaps in another client (an out-of-tree provider,
    or the in-process test double the cluster tests plug into a real operator process)."""
    target = os.environ.get(f"LLMSERVE_BURST_PLUGIN_{provider.upper()}")
    if not target:
        return None
    module_name, _, attr = target.partition(":")
    constructor: ProviderConstructor = getattr(importlib.import_module(module_name), attr)
    return constructor


def make_provider(spec: BurstPoolSpec, api_key: str) -> Provider:
    """A client for the pool's provider. Raises ProviderError(invalid) when no client is installed for it.

    The key is handed to the client only; it never reaches a log or an exception message here.
    """
    if spec.provider in _registered:
        return _registered[spec.provider](spec, api_key)
    plugin = _plugin(spec.provider)
    if plugin is not None:
        return plugin(spec, api_key)
    module_name, class_name = CLIENTS[spec.provider]
    try:
        client_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ProviderError(
            ErrorKind.INVALID,
            f"no {spec.provider} client is installed ({module_name}.{class_name}: {type(err).__name__})",
            provider=spec.provider,
        ) from None
    if spec.provider == "static":
        return client_class(endpoints=spec.static_endpoints, api_key=api_key)  # type: ignore[no-any-return]
    return client_class(api_key=api_key, base_url=base_url_override(spec.provider))  # type: ignore[no-any-return]
