"""Refuses every request to a rented vLLM engine that lacks the instance key, except the /health probe.

vLLM's own `--api-key` check guards only paths under /v1, /v2, /inference and /cohere: /invocations
(SageMaker's route, full inference), /tokenize, /pooling, /score, /rerank, /classify, /metrics and
more stay open on an engine that is on the internet. This module closes them. It is loaded through
vLLM's documented `--middleware` flag (`--middleware llmserve_engine_guard.EngineKeyGuard`): vLLM adds
a class named there with `app.add_middleware(cls)` after its own middleware, which makes it the
outermost one, in front of the router, so it sees every HTTP and WebSocket request whatever route would
serve it (mounted apps such as /metrics included).

Standard library only, one file: the burst start script writes it into the stock vllm/vllm-openai
container (as `llmserve_engine_guard.py`, from env chunks) and puts its directory on PYTHONPATH. The
llmserve simulator loads the same file through the same flag and asks `EngineKeyGuard.allows` the same
question, so rented engines in tests refuse exactly what real ones do. No key reaches a log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

# What a liveness probe needs, and nothing else: the burst controller's readiness probe calls /health.
# /ping (SageMaker's health check) and /version stay behind the key: nothing of llmserve calls them on
# a rented engine, and /version would tell a scanner which vLLM release it found.
OPEN_PATHS = frozenset({"/health"})
OPEN_METHODS = frozenset({"GET", "HEAD"})
REFUSAL_STATUS = 401
REFUSAL_BODY = b'{"error": "Unauthorized"}'  # vLLM's own refusal, so a client sees one shape
REFUSAL_HEADERS = (
    (b"content-type", b"application/json"),
    (b"www-authenticate", b'Bearer realm="llmserve"'),
)
WEBSOCKET_POLICY_VIOLATION = 1008  # close code: the server refuses the handshake (HTTP 403)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("llmserve.engine_guard")


def keys_from(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The keys vLLM itself accepts: every `--api-key` value on the command line, else VLLM_API_KEY.

    One value per flag: taking more could mistake the positional model name for a key."""
    keys: list[str] = []
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name.replace("_", "-") != "--api-key":
            continue
        if equals:
            keys.append(value)
        elif index + 1 < len(argv):
            keys.append(argv[index + 1])
    keys = [key for key in keys if key]
    if not keys and environ.get("VLLM_API_KEY"):
        keys = [environ["VLLM_API_KEY"]]
    return keys


def key_digests(keys: Iterable[str]) -> tuple[bytes, ...]:
    """SHA-256 of each key: compared digest to digest, a guess learns nothing from timing, not even length."""
    return tuple(hashlib.sha256(key.encode("utf-8")).digest() for key in keys if key)  # "" is no key


def bearer_credential(authorization: bytes | None) -> bytes | None:
    """The credential of `Authorization: Bearer <key>`, the scheme in any case (as vLLM reads it)."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(b" ")
    return credential if scheme.lower() == b"bearer" else None


def allows(method: str, path: str, authorization: bytes | None, digests: Sequence[bytes]) -> bool:
    """The whole policy (pure): a liveness probe passes; anything else needs one of the keys.

    `path` is the decoded request path without the query; `authorization` the raw header value (the
    first one, as Starlette reads it). With no key configured nothing but the probe passes."""
    if path in OPEN_PATHS and method.upper() in OPEN_METHODS:
        return True
    credential = bearer_credential(authorization)
    if credential is None or not digests:
        return False
    given = hashlib.sha256(credential).digest()
    matched = False
    for expected in digests:  # every key compared, always: the time taken says nothing about which
        matched |= hmac.compare_digest(given, expected)
    return matched


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header in an ASGI scope (names arrive lower-cased)."""
    for key, value in scope.get("headers") or ():
        if bytes(key).lower() == name:
            return bytes(value)
    return None


class EngineKeyGuard:
    """ASGI middleware: `--middleware llmserve_engine_guard.EngineKeyGuard`.

    Starlette builds it as `EngineKeyGuard(app)`; the keys come from the process's own command line and
    environment, read the way vLLM reads them, so the guard and vLLM always agree on the key."""

    def __init__(self, app: App | None, keys: Sequence[str] | None = None) -> None:
        self.app = app
        self._digests = key_digests(keys_from(sys.argv, os.environ) if keys is None else keys)
        if not self._digests:  # fail closed: a launch that lost its key serves nothing but /health
            log.warning("event=engine_guard_without_key served=/health")

    def allows(self, method: str, path: str, authorization: bytes | None) -> bool:
        return allows(method, path, authorization, self._digests)

    @staticmethod
    def refusal() -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes]:
        """Status, headers and body of a refused HTTP request."""
        return REFUSAL_STATUS, REFUSAL_HEADERS, REFUSAL_BODY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "an ASGI guard needs the app it guards"
        kind = scope.get("type")
        if kind not in ("http", "websocket"):  # lifespan: start-up and shutdown of the app itself
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path") or "/")
        root_path = str(scope.get("root_path") or "")
        if root_path and path.startswith(root_path):  # vLLM strips --root-path the same way
            path = path[len(root_path) :] or "/"
        method = str(scope.get("method") or "GET")  # a WebSocket handshake is a GET
        if self.allows(method, path, header(scope, b"authorization")):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})
            return
        status, headers, body = self.refusal()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
