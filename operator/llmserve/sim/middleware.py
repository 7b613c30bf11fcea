"""vLLM's `--middleware` for the simulated engine: the named object is imported as vLLM imports it, and
applied when it is a request guard (llmserve's engine guard, burst/engine_guard.py).

vLLM applies any ASGI middleware; the simulator is aiohttp, so it applies those that answer the guard's
question `allows(method, path, authorization)` and refuses to start with any other (a middleware that
silently did nothing could make a test pass that a real engine would fail). The guard object is built
as Starlette builds it (`cls(app)`), so it finds its keys the way it does inside vLLM; the decision and
the refusal are the loaded module's own, not a copy.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


class MiddlewareError(ValueError):
    """A `--middleware` the simulator cannot load or apply (vLLM would fail to start, or apply it)."""


class RequestGuard(Protocol):
    def allows(self, method: str, path: str, authorization: bytes | None) -> bool: ...

    def refusal(self) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes]: ...


def import_middleware(import_path: str) -> Any:
    """`module.object`, imported the way vLLM's api_server does (rsplit on the last dot)."""
    module_path, _, object_name = import_path.rpartition(".")
    if not module_path:
        raise MiddlewareError(f"--middleware {import_path!r}: expected an import path like module.Object")
    try:
        return getattr(importlib.import_module(module_path), object_name)
    except (ImportError, AttributeError) as error:
        raise MiddlewareError(f"--middleware {import_path!r} cannot be imported: {error}") from None


def guard_middleware(import_path: str) -> Middleware:
    """The aiohttp middleware that asks the imported guard about every request."""
    imported = import_middleware(import_path)
    if not inspect.isclass(imported) or not callable(getattr(imported, "allows", None)):
        raise MiddlewareError(
            f"--middleware {import_path!r}: the simulator applies only request guards (a class with "
            "allows(method, path, authorization), such as llmserve's engine guard)"
        )
    factory: Any = imported
    guard: RequestGuard = factory(None)  # as Starlette builds it: cls(app)

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The raw bytes of the first Authorization header, as an ASGI server hands them over.
        authorization = next((v for k, v in request.raw_headers if k.lower() == b"authorization"), None)
        if guard.allows(request.method, request.path, authorization):
            return await handler(request)
        status, headers, body = guard.refusal()
        return web.Response(
            status=status, body=body, headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        )

    return guarded
