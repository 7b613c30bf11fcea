"""vLLM's `--api-key` and TLS for the simulated engine: /v1/* needs the key, /health and /metrics do not.

Mirrors vLLM 0.33.0's AuthenticationMiddleware (vllm/entrypoints/serve/middleware/authenticate.py):
only paths under /v1, /v2, /inference and /cohere are guarded (0.11.0 guarded /v1 only; the simulator
serves nothing under the others), the header is `Authorization: <scheme> <key>` with the scheme
`Bearer` in any case, and a refusal is 401 `{"error": "Unauthorized"}`. Everything else (/health,
/metrics, /tokenize, /invocations, ...) is open, which is why engines also sit behind a NetworkPolicy,
and rented engines load llmserve's engine guard with `--middleware` (sim/middleware.py applies it).
The key is never logged.
"""

from __future__ import annotations

import hmac
import ssl

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

UNAUTHORIZED_BODY = {"error": "Unauthorized"}
GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")  # vLLM's GUARDED_PREFIX


def api_key_middleware(api_key: str) -> Middleware:
    expected = api_key.encode()

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" or not request.path.startswith(GUARDED_PREFIXES):
            return await handler(request)
        # Header bytes that are not UTF-8 arrive as surrogate escapes: kept as bytes, never a 500.
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = given.encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token, expected):
            return web.json_response(UNAUTHORIZED_BODY, status=401)
        return await handler(request)

    return check_api_key


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """What vLLM builds from `--ssl-certfile/--ssl-keyfile` (uvicorn's defaults: TLS server, no client cert)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
