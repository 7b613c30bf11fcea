"""The gateway writes an unstreamed answer before its bookkeeping (metrics, metering, the access log),
and still meters the answer's usage; in-process servers on real loopback sockets."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmserve.gateway.auth import KeyStore
from llmserve.gateway.hold import Holder, HoldSettings
from llmserve.gateway.limits import RateLimiter
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.proxy import Proxy, ProxySettings
from llmserve.gateway.registry import Registry
from llmserve.gateway.server import Gateway, ServerSettings
from llmserve.gateway.static import StaticSource

KEY = "sk-write-order-0123456789abcdef"
ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "llama",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
}  # fmt: skip
_current: contextvars.ContextVar[web.Request] = contextvars.ContextVar("request")


class _BytesSentAtAccessLog(logging.Handler):
    """Records, for each access-log line, how many response bytes the request had written by then."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.sent.append(_current.get().writer.output_size)


@web.middleware
async def _remember(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    _current.set(request)
    return await handler(request)


async def test_an_unstreamed_answer_is_on_the_wire_before_its_access_log_line_and_is_metered(
    tmp_path: Path,
) -> None:
    async def chat(request: web.Request) -> web.Response:
        return web.json_response(ANSWER)

    engine_app = web.Application()
    engine_app.router.add_post("/v1/chat/completions", chat)
    engine = TestServer(engine_app, host="127.0.0.1")
    await engine.start_server()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "models": [{"name": "llama", "backends": [str(engine.make_url("")).rstrip("/")]}],
        "keys": [{"name": "team-a", "key": KEY}],
    }))  # fmt: skip
    registry, keys, metrics = Registry(), KeyStore(), GatewayMetrics()
    await StaticSource(config, registry, keys).load()
    recorder = _BytesSentAtAccessLog()
    access_log = logging.getLogger("llmserve.gateway.access")
    access_log.addHandler(recorder)
    level = access_log.level
    access_log.setLevel(logging.INFO)
    try:
        async with aiohttp.ClientSession() as upstream, aiohttp.ClientSession() as client:
            proxy = Proxy(registry, upstream, ProxySettings(), metrics)
            holder = Holder(registry, None, HoldSettings(), metrics)
            gateway = Gateway(registry, keys, RateLimiter(), proxy, holder, metrics, ServerSettings())
            app = gateway.app()
            app.middlewares.insert(0, _remember)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            try:
                body = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
                async with client.post(
                    server.make_url("/v1/chat/completions"),
                    json=body,
                    headers={"Authorization": f"Bearer {KEY}"},
                ) as reply:
                    assert reply.status == 200
                    assert await reply.json() == ANSWER
            finally:
                await server.close()
    finally:
        access_log.removeHandler(recorder)
        access_log.setLevel(level)
        await engine.close()
    assert len(recorder.sent) == 1 and recorder.sent[0] > len(
        b"HTTP/1.1 200 OK"
    )  # head and body already sent
    tokens = metrics.registry.get_sample_value
    assert (
        tokens("llmserve_gateway_tokens_total", {"key": "team-a", "model": "llama", "kind": "prompt"}) == 11
    )
    assert (
        tokens("llmserve_gateway_tokens_total", {"key": "team-a", "model": "llama", "kind": "completion"})
        == 3
    )
