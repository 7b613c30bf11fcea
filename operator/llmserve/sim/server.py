"""The simulator's HTTP surface: OpenAI-compatible endpoints, /health, /metrics, and load/drain lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from llmserve.gateway.request_body import PARSE_IN_THREAD_BYTES, BodyError, decode_json, read_body
from llmserve.sim.api_routes import ApiRoutes
from llmserve.sim.batching import FinishReason
from llmserve.sim.live import LiveEngine, RequestStream
from llmserve.sim.metrics import CONTENT_TYPE_LATEST, EngineMetrics
from llmserve.sim.openai_api import (
    ApiError,
    ParsedRequest,
    RequestKind,
    StreamEncoder,
    full_response,
    new_request_id,
    parse_request,
)
from llmserve.sim.prefix_cache import prompt_block_hashes
from llmserve.sim.tokens import OutputLengthSampler, filler_text

log = logging.getLogger(__name__)

SIM_VERSION = "0.0.0+llmserve-sim"
MAX_BODY_BYTES = 64 * 1024**2
BODY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class ServerSettings:
    """What the HTTP layer needs to know about the engine it fronts."""

    model: str
    served_model_names: list[str]
    max_model_len: int
    load_wall_seconds: float = 0.0


class SimServer:
    """One simulated vLLM replica: routes, request lifecycle, readiness and graceful drain."""

    def __init__(
        self, settings: ServerSettings, live: LiveEngine, metrics: EngineMetrics, sampler: OutputLengthSampler
    ) -> None:
        self.settings = settings
        self.live = live
        self.metrics = metrics
        self.sampler = sampler
        self.draining = False
        self.ready = False
        self._created = int(time.time())

    # -- lifecycle -----------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Begin the simulated model load; /health turns 200 when it completes."""
        seconds = self.settings.load_wall_seconds
        log.info("event=model_loading model=%s load_wall_seconds=%.3f", self.settings.model, seconds)
        asyncio.get_running_loop().call_later(seconds, self._loaded)

    def _loaded(self) -> None:
        self.ready = True
        names = ",".join(self.settings.served_model_names)
        log.info("event=model_loaded model=%s served=%s", self.settings.model, names)

    async def drain(self, grace_wall_seconds: float) -> bool:
        """Stop admitting, then wait up to the grace period for in-flight requests. True if all finished."""
        self.draining = True
        in_flight = self.live.num_in_flight
        log.info("event=draining in_flight=%d grace_wall_seconds=%.3f", in_flight, grace_wall_seconds)
        try:
            await asyncio.wait_for(self.live.wait_idle(), timeout=grace_wall_seconds)
        except TimeoutError:
            log.warning("event=drain_timeout abandoned=%d", self.live.num_in_flight)
            return False
        log.info("event=drained finished=%d", in_flight)
        return True

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat_completions),
                web.post("/v1/completions", self.completions),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get("/ping", self.health),
                web.post("/ping", self.health),
                web.get("/version", self.version),
                web.get("/metrics", self.metrics_endpoint),
            ]
        )
        app.add_routes(ApiRoutes(self).routes())  # Responses API, Anthropic Messages, tokenizer
        return app

    # -- plain endpoints -----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        if self.draining or not self.ready:
            return web.Response(status=503)
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": SIM_VERSION})

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        data: list[dict[str, object]] = [
            {
                "id": name,
                "object": "model",
                "created": self._created,
                "owned_by": "vllm",
                "root": self.settings.model,
                "parent": None,
                "max_model_len": self.settings.max_model_len,
                "permission": [],
            }
            for name in self.settings.served_model_names
        ]
        return web.json_response({"object": "list", "data": data})

    # -- generation ----------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def _generate(self, request: web.Request, kind: RequestKind) -> web.StreamResponse:
        try:
            parsed = await self._parse(request, kind)
        except ApiError as error:
            return web.json_response(error.body(), status=error.status)
        limit = self.settings.max_model_len - parsed.prompt_tokens
        max_output, stop_after = self.sampler.stop_after(parsed.max_tokens, limit)
        stream = self.live.submit(parsed.prompt_tokens, max_output, stop_after, parsed.prompt_block_hashes)
        try:
            if parsed.stream:
                return await self._stream(request, parsed, stream)
            return await self._collect(parsed, stream)
        finally:
            # No-op for finished requests; aborts the ones whose client disconnected.
            self.live.cancel(stream.request_id)

    async def _parse(self, request: web.Request, kind: RequestKind) -> ParsedRequest:
        if self.draining:
            raise ApiError(503, "The server is shutting down and no longer accepts requests.")
        if not self.ready:
            raise ApiError(503, "The model is still loading; retry when /health returns 200.")
        try:
            raw = await read_body(request, MAX_BODY_BYTES, BODY_TIMEOUT_SECONDS)
            body = (
                await asyncio.to_thread(decode_json, raw)
                if len(raw) > PARSE_IN_THREAD_BYTES
                else decode_json(raw)
            )
        except BodyError as error:
            raise ApiError(400 if error.status == 415 else error.status, error.message) from None
        parsed = parse_request(kind, body, self.settings.served_model_names, self.settings.max_model_len)
        hashes = prompt_block_hashes(kind, body, self.live.engine.config.block_size)
        return dataclasses.replace(parsed, prompt_block_hashes=hashes)

    async def _collect(self, parsed: ParsedRequest, stream: RequestStream) -> web.Response:
        produced = 0
        finish_reason: FinishReason | None = None
        while finish_reason is None:
            delivery = await stream.queue.get()
            produced += delivery.tokens
            finish_reason = delivery.finish_reason
        request_id = new_request_id(parsed.kind)
        body = full_response(parsed, request_id, filler_text(0, produced), finish_reason.value, produced)
        return web.json_response(body)

    async def _stream(
        self, request: web.Request, parsed: ParsedRequest, stream: RequestStream
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        encoder = StreamEncoder(parsed, new_request_id(parsed.kind))
        if parsed.kind == "chat":
            await response.write(encoder.role_chunk())
        produced = 0
        while True:
            delivery = await stream.queue.get()
            text = filler_text(produced, delivery.tokens)
            produced += delivery.tokens
            reason = None if delivery.finish_reason is None else delivery.finish_reason.value
            await response.write(encoder.token_chunk(text, reason))
            if reason is not None:
                break
        if parsed.include_usage:
            await response.write(encoder.usage_chunk(produced))
        await response.write(encoder.done())
        await response.write_eof()
        return response
