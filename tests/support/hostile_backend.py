"""A deliberately broken OpenAI backend on a loopback port, run in a thread: what it does depends on
the `model` of each request."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web

BIG_ANSWER_BYTES = 3 * 1024 * 1024


async def _handle(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = await request.json()
    model = body.get("model")
    if model == "authfail":
        return web.json_response(
            {"error": "Unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    if model == "frozen":  # starts a stream, sends one event, then stays silent while alive
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"index":0,"text":"a"}]}\n\n')
        await asyncio.sleep(3600)
        return response
    if model == "big":  # an unstreamed answer larger than the gateway reads whole
        text = "x" * BIG_ANSWER_BYTES
        payload = {
            "choices": [{"index": 0, "text": text}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 7},
        }
        return web.Response(body=json.dumps(payload).encode(), content_type="application/json")
    # "rude": connection-level headers and unbelievable usage numbers
    payload = {
        "choices": [{"index": 0, "text": "ok"}],
        "usage": {"prompt_tokens": -5, "completion_tokens": 10**30},
    }
    headers = {
        "Connection": "keep-alive, X-Drop-Me",
        "Keep-Alive": "timeout=1",
        "X-Drop-Me": "connection-specific",
        "Set-Cookie": "session=backend",
        "Upgrade": "h2c",
        "X-Backend-Kept": "yes",
    }
    return web.Response(body=json.dumps(payload).encode(), content_type="application/json", headers=headers)


class HostileBackend:
    def __init__(self, port: int) -> None:
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> HostileBackend:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", _handle)
        app.router.add_post("/v1/chat/completions", _handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
