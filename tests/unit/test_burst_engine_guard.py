"""The engine guard a rented vLLM loads with --middleware: its policy, its keys, and a real ASGI call.

The ASGI tests run the guard in front of a tiny ASGI app with real scope/receive/send messages, the way
Starlette runs a middleware that vLLM added with `app.add_middleware`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmserve.burst import engine_guard
from llmserve.burst.engine_guard import EngineKeyGuard, allows, bearer_credential, key_digests, keys_from

KEY = "llmsk-" + "k" * 43
DIGESTS = key_digests([KEY])
# Routes vLLM 0.11.0 and 0.33.0 serve outside /v1, /v2, /inference and /cohere (open under --api-key).
OPEN_UNDER_VLLM_KEY = ["/invocations", "/tokenize", "/detokenize", "/pooling", "/score", "/rerank",
                       "/classify", "/metrics", "/ping", "/version", "/load", "/is_sleeping", "/"]  # fmt: skip


# -- the policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*OPEN_UNDER_VLLM_KEY, "/v1/chat/completions", "/v1/models"])
def test_every_route_but_health_is_refused_without_the_key_and_served_with_it(path: str) -> None:
    for method in ("GET", "POST"):
        assert not allows(method, path, None, DIGESTS)
        assert not allows(method, path, b"Bearer wrong-key", DIGESTS)
        assert not allows(method, path, KEY.encode(), DIGESTS)  # no scheme
        assert not allows(method, path, b"Basic " + KEY.encode(), DIGESTS)
        assert allows(method, path, b"Bearer " + KEY.encode(), DIGESTS)
        assert allows(method, path, b"bEaReR " + KEY.encode(), DIGESTS)  # the scheme in any case, as vLLM


def test_only_a_liveness_probe_passes_without_a_key() -> None:
    assert allows("GET", "/health", None, DIGESTS) and allows("HEAD", "/health", None, DIGESTS)
    assert not allows("POST", "/health", None, DIGESTS)
    for near in ("/health/", "/health/x", "/healthz", "//health", "/v1/../health", "/HEALTH"):
        assert not allows("GET", near, None, DIGESTS), near
    assert not allows("OPTIONS", "/v1/chat/completions", None, DIGESTS)  # no CORS pass-through


def test_a_near_miss_key_is_refused() -> None:
    for guess in (KEY[:-1], KEY + "x", KEY + " ", " " + KEY, KEY.upper(), ""):
        assert not allows("POST", "/invocations", b"Bearer " + guess.encode(), DIGESTS), repr(guess)


def test_without_any_key_nothing_but_the_probe_is_served() -> None:
    assert not allows("POST", "/invocations", b"Bearer ", ())
    assert not allows("POST", "/v1/completions", b"Bearer anything", ())
    assert allows("GET", "/health", None, ())


def test_any_of_several_keys_is_accepted() -> None:
    digests = key_digests(["first", "second"])
    assert allows("GET", "/metrics", b"Bearer second", digests)
    assert allows("GET", "/metrics", b"Bearer first", digests)
    assert not allows("GET", "/metrics", b"Bearer third", digests)


def test_bearer_credential_keeps_the_rest_of_the_header_verbatim() -> None:
    assert bearer_credential(b"Bearer a b") == b"a b"
    assert bearer_credential(b"Bearer") == b""  # no space: an empty credential, as vLLM reads it
    assert not allows("GET", "/metrics", b"Bearer", key_digests([""]))  # and an empty key is no key
    assert bearer_credential(None) is None and bearer_credential(b"") is None


def test_keys_are_read_as_vllm_reads_them() -> None:
    assert keys_from(["vllm", "serve", "--model", "m", "--api-key", "k1"], {}) == ["k1"]
    assert keys_from(["vllm", "serve", "--api-key=k1", "--api_key", "k2"], {}) == ["k1", "k2"]
    # One value per flag: the positional model after it is no key.
    assert keys_from(["vllm", "serve", "--api-key", "k1", "meta-llama/Llama"], {}) == ["k1"]
    assert keys_from(["vllm", "serve"], {"VLLM_API_KEY": "from-env"}) == ["from-env"]
    assert keys_from(["vllm", "serve", "--api-key", "k1"], {"VLLM_API_KEY": "from-env"}) == [
        "k1"
    ]  # CLI first
    assert keys_from(["vllm", "serve", "--api-key"], {}) == []
    assert keys_from(["vllm", "serve", "--api-key", ""], {"VLLM_API_KEY": ""}) == []


def test_the_guard_module_imports_nothing_beyond_the_standard_library() -> None:
    """It is copied alone into the stock vllm/vllm-openai image: run it with no llmserve on the path."""
    source = Path(engine_guard.__file__).read_text()
    program = (
        "import sys, types\n"
        "sys.modules.pop('llmserve', None)\n"
        "module = types.ModuleType('llmserve_engine_guard')\n"
        f"exec(compile({source!r}, 'llmserve_engine_guard.py', 'exec'), module.__dict__)\n"
        "guard = module.EngineKeyGuard(None)\n"
        "print(guard.allows('GET', '/metrics', b'Bearer k9'), guard.allows('GET', '/metrics', None))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program, "--api-key", "k9"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["True", "False"]


# -- the ASGI middleware ---------------------------------------------------------------------------


class Downstream:
    """The app behind the guard: answers 200 and records that it was reached."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(f"{scope['type']} {scope.get('path', '')}")
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"served"})


def call(guard: EngineKeyGuard, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(guard(scope, receive, send))
    return sent


def http(path: str, method: str = "POST", authorization: bytes | None = None, **extra: Any) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": headers, **extra}  # fmt: skip


def test_asgi_refuses_invocations_without_the_key_with_a_401_json_body() -> None:
    app = Downstream()
    sent = call(EngineKeyGuard(app, keys=[KEY]), http("/invocations"))
    assert app.calls == []
    start, body = sent
    assert start["status"] == 401
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json" and headers[b"www-authenticate"].startswith(
        b"Bearer"
    )
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"error": "Unauthorized"}


def test_asgi_passes_the_keyed_request_and_the_probe_through() -> None:
    app = Downstream()
    guard = EngineKeyGuard(app, keys=[KEY])
    assert call(guard, http("/tokenize", authorization=b"Bearer " + KEY.encode()))[0]["status"] == 200
    assert call(guard, http("/health", method="GET"))[0]["status"] == 200
    assert app.calls == ["http /tokenize", "http /health"]


def test_asgi_strips_the_root_path_as_vllm_does() -> None:
    app = Downstream()
    guard = EngineKeyGuard(app, keys=[KEY])
    assert call(guard, http("/api/health", method="GET", root_path="/api"))[0]["status"] == 200
    assert call(guard, http("/api/metrics", method="GET", root_path="/api"))[0]["status"] == 401


def test_asgi_closes_a_websocket_handshake_without_the_key() -> None:
    app = Downstream()
    guard = EngineKeyGuard(app, keys=[KEY])
    scope = {"type": "websocket", "path": "/v1/realtime", "headers": [], "root_path": ""}
    assert call(guard, scope) == [{"type": "websocket.close", "code": 1008}]
    keyed = {**scope, "headers": [(b"authorization", b"Bearer " + KEY.encode())]}
    call(guard, keyed)
    assert app.calls == ["websocket /v1/realtime"]


def test_asgi_lets_lifespan_through() -> None:
    app = Downstream()
    call(EngineKeyGuard(app, keys=[KEY]), {"type": "lifespan"})
    assert app.calls == ["lifespan "]


def test_guard_reads_its_key_from_the_process_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["vllm", "serve", "--api-key", KEY])
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    app = Downstream()
    guard = EngineKeyGuard(app)
    assert call(guard, http("/pooling", authorization=b"Bearer " + KEY.encode()))[0]["status"] == 200
    assert call(guard, http("/pooling"))[0]["status"] == 401


def test_a_guard_without_a_key_says_so_and_never_logs_a_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(sys, "argv", ["vllm", "serve"])
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    app = Downstream()
    guard = EngineKeyGuard(app)
    assert call(guard, http("/invocations", authorization=b"Bearer anything"))[0]["status"] == 401
    assert "engine_guard_without_key" in caplog.text
    EngineKeyGuard(app, keys=[KEY])
    call(EngineKeyGuard(app, keys=[KEY]), http("/metrics", authorization=b"Bearer " + KEY.encode() + b"x"))
    assert KEY not in caplog.text
