"""vLLM's `--api-key` and TLS for the simulated engine: /v1/* needs the key, /health and /metrics do not.

Mirrors vLLM's AuthenticationMiddleware (vllm/entrypoints/openai/api_server.py): only paths under
/v1 are guarded, the key is compared with `Authorization: Bearer <key>`, and a refusal is
401 `{"error": "Unauthorized"}`. The key is never logged.
"""

from __future__ import annotations

import hmac
import ssl

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

UNAUTHORIZED_BODY = {"error": "Unauthorized"}


def api_key_middleware(api_key: str) -> Middleware:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" or not request.path.startswith("/v1"):
            return await handler(request)
        # Header bytes that are not UTF-8 arrive as surrogate escapes: kept as bytes, never a 500.
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            return web.json_response(UNAUTHORIZED_BODY, status=401)
        return await handler(request)

    return check_api_key


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """What vLLM builds from `--ssl-certfile/--ssl-keyfile` (uvicorn's defaults: TLS server, no client cert)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
