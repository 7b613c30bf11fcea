"""The simulator's Responses API, Anthropic Messages, tokenizer and pooling routes, on the shared engine."""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmserve.sim import anthropic_api, pooling_api, responses_api, tokenizer
from llmserve.sim.live import RequestStream
from llmserve.sim.openai_api import ApiError
from llmserve.sim.tokens import filler_text

if TYPE_CHECKING:
    from llmserve.sim.server import SimServer

# vLLM keeps Responses API objects only when this is set, and then never forgets them; the simulator
# honours the same variable and keeps the newest STORE_LIMIT.
STORE_ENV = "VLLM_ENABLE_RESPONSES_API_STORE"
STORE_LIMIT = 10_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class ApiRoutes:
    """Handlers that share the replica's engine, readiness and settings with the chat/completions ones."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.store_enabled = os.environ.get(STORE_ENV, "0").strip().lower() in ("1", "true")
        self.store: OrderedDict[str, responses_api.StoredResponse] = OrderedDict()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/responses", self.create_response),
            web.get("/v1/responses/{response_id}", self.retrieve_response),
            web.post("/v1/responses/{response_id}/cancel", self.cancel_response),
            web.post("/v1/messages", self.messages),
            web.post("/v1/messages/count_tokens", self.count_tokens),
            web.post("/tokenize", self.tokenize),
            web.post("/detokenize", self.detokenize),
            web.post("/v1/embeddings", self._answered_by(pooling_api.embeddings)),
            web.post("/v1/score", self._answered_by(pooling_api.score)),
            web.post("/v1/rerank", self._answered_by(pooling_api.rerank)),
        ]

    def _answered_by(self, answer: Callable[[object, list[str]], dict[str, Any]]) -> Handler:
        """A route answered at once from the body (pooling: no generation to wait for)."""

        async def handler(request: web.Request) -> web.Response:
            try:
                return web.json_response(answer(await self._body(request), self._names))
            except ApiError as error:
                return web.json_response(error.body(), status=error.status)

        return handler

    # -- shared ------------------------------------------------------------------------------

    @property
    def _names(self) -> list[str]:
        return self.server.settings.served_model_names

    @property
    def _max_model_len(self) -> int:
        return self.server.settings.max_model_len

    async def _body(self, request: web.Request) -> Any:
        if self.server.draining:
            raise ApiError(503, "The server is shutting down and no longer accepts requests.")
        if not self.server.ready:
            raise ApiError(503, "The model is still loading; retry when /health returns 200.")
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"The request body is not valid JSON: {error}.") from None

    def _submit(self, prompt_tokens: int, max_tokens: int | None) -> RequestStream:
        """Queue a request on the engine; the caller cancels it when done (a no-op once finished)."""
        limit = self._max_model_len - prompt_tokens
        max_output, stop_after = self.server.sampler.stop_after(
            None if max_tokens is None else min(max_tokens, limit), limit
        )
        return self.server.live.submit(prompt_tokens, max_output, stop_after)

    @staticmethod
    async def _deliveries(stream: RequestStream) -> AsyncIterator[tuple[str, int, str | None]]:
        """(text, tokens, finish_reason) per engine step that produced output, until it finishes."""
        produced = 0
        while True:
            delivery = await stream.queue.get()
            text = filler_text(produced, delivery.tokens)
            produced += delivery.tokens
            reason = None if delivery.finish_reason is None else delivery.finish_reason.value
            yield text, delivery.tokens, reason
            if reason is not None:
                return

    @staticmethod
    async def _sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        return response

    # -- Responses API -----------------------------------------------------------------------

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        try:
            parsed, prompt_tokens = responses_api.parse_responses_request(
                await self._body(request), self._names, self._max_model_len, self.store_enabled
            )
            if parsed.previous_response_id is not None:
                previous = self.store.get(parsed.previous_response_id)
                if previous is None:
                    raise responses_api.not_found(parsed.previous_response_id)
                prompt_tokens += previous.context_tokens
            if prompt_tokens >= self._max_model_len:
                raise ApiError(400, "The conversation no longer fits in the model's context.", param="input")
        except ApiError as error:
            return web.json_response(error.body(), status=error.status)
        max_output = min(parsed.max_output_tokens or self._max_model_len, self._max_model_len - prompt_tokens)
        stream = self._submit(prompt_tokens, parsed.max_output_tokens)
        try:
            if parsed.stream:
                return await self._stream_response(request, parsed, prompt_tokens, max_output, stream)
            return await self._whole_response(parsed, prompt_tokens, max_output, stream)
        finally:
            self.server.live.cancel(stream.request_id)

    async def _stream_response(
        self,
        request: web.Request,
        parsed: responses_api.ResponsesRequest,
        prompt_tokens: int,
        max_output: int,
        stream: RequestStream,
    ) -> web.StreamResponse:
        encoder = responses_api.ResponsesStreamEncoder(parsed, max_output)
        response = await self._sse(request)
        await response.write(encoder.start())
        produced = 0
        async for text, tokens, reason in self._deliveries(stream):
            produced += tokens
            await response.write(encoder.delta(text))
            if reason is not None:
                events, final = encoder.finish(reason, prompt_tokens, produced)
                self._remember(parsed, final, prompt_tokens + produced)
                await response.write(events)
        await response.write_eof()
        return response

    async def _whole_response(
        self,
        parsed: responses_api.ResponsesRequest,
        prompt_tokens: int,
        max_output: int,
        stream: RequestStream,
    ) -> web.Response:
        parts, produced, finish = [], 0, "stop"
        async for text, tokens, reason in self._deliveries(stream):
            parts.append(text)
            produced += tokens
            finish = reason or finish
        output_text = "".join(parts)
        item = responses_api.message_item(f"msg_{parsed.response_id[5:]}", output_text, "completed")
        body = responses_api.response_object(
            parsed, int(time.time()), responses_api.status_of(finish), [item],
            responses_api.usage_object(prompt_tokens, produced), max_output,
        )  # fmt: skip
        self._remember(parsed, body, prompt_tokens + produced)
        return web.json_response(body)

    def _remember(
        self, parsed: responses_api.ResponsesRequest, body: dict[str, Any], context_tokens: int
    ) -> None:
        if not parsed.store:
            return
        self.store[parsed.response_id] = responses_api.StoredResponse(body, context_tokens)
        while len(self.store) > STORE_LIMIT:
            self.store.popitem(last=False)

    def _stored(self, request: web.Request) -> responses_api.StoredResponse:
        response_id = request.match_info["response_id"]
        stored = self.store.get(response_id)
        if stored is None:
            raise responses_api.not_found(response_id)
        return stored

    async def retrieve_response(self, request: web.Request) -> web.Response:
        try:
            stored = self._stored(request)
            if request.query.get("stream", "").lower() == "true":
                raise ApiError(
                    400, "Only background responses can be streamed again; none run here.", "stream"
                )
        except ApiError as error:
            return web.json_response(error.body(), status=error.status)
        return web.json_response(stored.body)

    async def cancel_response(self, request: web.Request) -> web.Response:
        try:
            self._stored(request)
            raise ApiError(400, "Cannot cancel a synchronous response.", param="response_id")
        except ApiError as error:
            return web.json_response(error.body(), status=error.status)

    # -- Anthropic Messages ------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.StreamResponse:
        try:
            parsed, prompt_tokens = anthropic_api.parse_messages_request(
                await self._body(request), self._names, self._max_model_len
            )
        except ApiError as error:
            return web.json_response(anthropic_api.anthropic_error(error), status=error.status)
        stream = self._submit(prompt_tokens, parsed.max_tokens)
        try:
            if parsed.stream:
                encoder = anthropic_api.MessagesStreamEncoder(parsed, prompt_tokens)
                response = await self._sse(request)
                await response.write(encoder.start())
                produced = 0
                async for text, tokens, reason in self._deliveries(stream):
                    produced += tokens
                    await response.write(encoder.delta(text))
                    if reason is not None:
                        await response.write(encoder.finish(reason, produced))
                await response.write_eof()
                return response
            parts, produced, finish = [], 0, "stop"
            async for text, tokens, reason in self._deliveries(stream):
                parts.append(text)
                produced += tokens
                finish = reason or finish
        finally:
            self.server.live.cancel(stream.request_id)
        body = anthropic_api.message_body(
            anthropic_api.new_message_id(), parsed.model, "".join(parts), finish, prompt_tokens, produced
        )
        return web.json_response(body)

    async def count_tokens(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(anthropic_api.count_tokens(await self._body(request), self._names))
        except ApiError as error:
            return web.json_response(anthropic_api.anthropic_error(error), status=error.status)

    # -- tokenizer ---------------------------------------------------------------------------

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = _object_for_model(await self._body(request), self._names)
            ids = _tokenize(body)
        except ApiError as error:
            return web.json_response(error.body(), status=error.status)
        strs = [tokenizer.token_text(token) for token in ids] if body.get("return_token_strs") else None
        return web.json_response(
            {"count": len(ids), "max_model_len": self._max_model_len, "tokens": ids, "token_strs": strs}
        )

    async def detokenize(self, request: web.Request) -> web.Response:
        try:
            body = _object_for_model(await self._body(request), self._names)
            tokens = body.get("tokens")
            if not isinstance(tokens, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= tokenizer.MAX_TOKEN_ID
                for t in tokens
            ):
                raise ApiError(
                    400, "`tokens` must be a list of token ids (integers from 0 to 2^63-1).", "tokens"
                )
        except ApiError as error:
            return web.json_response(error.body(), status=error.status)
        return web.json_response({"prompt": tokenizer.decode(tokens)})


def _object_for_model(body: Any, served_names: list[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and model not in served_names:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model")
    return body


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"`{name}` must be true or false.", param=name)
    return value


def _tokenize(body: dict[str, Any]) -> list[int]:
    """POST /tokenize: a completions `prompt` or chat `messages`, like vLLM's two request kinds."""
    messages = body.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
        ):
            raise ApiError(
                400, "`messages` must be a list of objects with a string `role`.", param="messages"
            )
        return tokenizer.encode_chat(messages, _flag(body, "add_generation_prompt", True))
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "Either `prompt` (a string) or `messages` (a list) is required.", param="prompt")
    return tokenizer.encode_prompt(prompt, _flag(body, "add_special_tokens", True))
