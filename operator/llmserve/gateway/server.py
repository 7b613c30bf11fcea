"""The aiohttp application: authenticate, validate, hold, proxy (rate limits, metering and the access log: accounting.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmserve.gateway.accounting import UNKNOWN_MODEL, RequestAccounting, error_reason
from llmserve.gateway.affinity import prefix_key
from llmserve.gateway.auth import ANONYMOUS, ApiKey, KeyStore, auth_required, bearer_token
from llmserve.gateway.errors import GatewayError, error_body
from llmserve.gateway.hold import Holder
from llmserve.gateway.limits import RateLimiter
from llmserve.gateway.metering import requested_tokens, wants_stream
from llmserve.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from llmserve.gateway.outcome import Outcome
from llmserve.gateway.proxy import Forwarding, Proxy
from llmserve.gateway.registry import Registry
from llmserve.gateway.request_body import (
    BodyError,
    check_content_headers,
    decode_json_object,
    read_body,
    with_member_first,
)
from llmserve.gateway.responses_api import create_forwarding, stored_response_holder
from llmserve.gateway.routes import (
    PROXIED,
    PROXIED_BY_PATH,
    REFUSED,
    RESPONSE_BY_ID_PATH,
    RESPONSE_CANCEL_PATH,
    ProxiedRoute,
    RefusedRoute,
    refusal_message,
)
from llmserve.gateway.routing import Policy
from llmserve.gateway.shutdown import Drain

log = logging.getLogger(__name__)

_INCLUDE_USAGE = b'"stream_options":{"include_usage":true}'


@dataclass(frozen=True)
class ServerSettings:
    max_body_bytes: int = 8 * 1024 * 1024
    insecure_no_auth: bool = False  # accept requests without a key, even beyond loopback
    loopback_only: bool = True  # bound to a loopback address
    serve_metrics: bool = True  # /metrics on this port (off when a separate metrics port is used)
    access_log: bool = True
    body_timeout_seconds: float = 30.0  # a body slower than this gets 408


class Gateway:
    def __init__(
        self,
        registry: Registry,
        keys: KeyStore,
        limiter: RateLimiter,
        proxy: Proxy,
        holder: Holder,
        metrics: GatewayMetrics,
        settings: ServerSettings,
    ) -> None:
        self.registry, self.keys = registry, keys
        self.proxy, self.holder, self.metrics, self.settings = proxy, holder, metrics, settings
        self.started_at = int(time.time())
        self.accounting = RequestAccounting(limiter, metrics, settings.access_log)
        self.drain = Drain()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[_errors_as_json])
        self.drain.install(app)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/v1/models", self.models)
        for proxied in PROXIED:  # routes.py: what vLLM serves and what the gateway does with it
            app.router.add_post(proxied.path, self.proxied)
        app.router.add_get(RESPONSE_BY_ID_PATH, self.stored_response)
        app.router.add_post(RESPONSE_CANCEL_PATH, self.stored_response)
        for refused in REFUSED:
            app.router.add_route(refused.method, refused.path, _refuse(refused))
        if self.settings.serve_metrics:
            app.router.add_get("/metrics", self.metrics_endpoint)
        return app

    @property
    def auth_required(self) -> bool:
        # A gateway that had keys stays closed when the last one is removed (keys_seen counts as one).
        keys_seen = max(len(self.keys), int(self.keys.ever_had_keys))
        return auth_required(self.settings.insecure_no_auth, keys_seen, self.settings.loopback_only)

    def authenticate(self, request: web.Request) -> ApiKey:
        if not self.auth_required:
            return ANONYMOUS
        # Anthropic's clients send the key as x-api-key.
        token = bearer_token(request.headers.get("Authorization")) or request.headers.get("X-Api-Key")
        if not token:
            raise GatewayError(
                401,
                "Missing API key: send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
                code="missing_api_key",
            )
        # A key with bytes outside UTF-8 (surrogate escapes from the header parser) matches no key.
        key = self.keys.authenticate(token) if _encodable(token) else None
        if key is None:
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        return key

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def ready(self, request: web.Request) -> web.Response:
        if self.drain.draining:
            return web.Response(status=503, text="shutting down")
        if not self.registry.synced_sources:
            return web.Response(status=503, text="discovery has not synced yet")
        return web.Response(text="ready")

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        for name, route in self.registry.routes.items():
            self.metrics.backends.labels(name).set(len(route.backends))
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        key = self.authenticate(request)
        data = [
            {"id": name, "object": "model", "created": self.started_at, "owned_by": "llmserve"}
            for name in sorted(self.registry.routes)
            if key.allows(name)
        ]
        return web.json_response({"object": "list", "data": data})

    async def proxied(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        outcome = Outcome()
        spec = PROXIED_BY_PATH[request.path]
        key, model, stream = ANONYMOUS, UNKNOWN_MODEL, False
        reserved = 0.0
        try:
            try:
                key = self.authenticate(request)
                raw, payload = await self._read_json(request)
                model = self._model_of(payload, key)
                forwarding = _FORWARDING_BY_STYLE[spec.errors]
                if spec.usage == "responses":
                    forwarding = create_forwarding(payload, key, model, self.registry.routes)
                # Tokenizer routes generate nothing: they are counted as requests and reserve no tokens.
                amount = float(requested_tokens(payload, len(raw))) if spec.usage != "none" else 0.0
                reserved = self.accounting.admit(key, started, amount)
                stream = wants_stream(payload.get("stream"))
                affinity = (
                    prefix_key(request.path, payload) if self.proxy.settings.policy is Policy.PREFIX else None
                )
                body, strip_usage = self._upstream_body(spec, raw, payload, stream)
                response = await self._serve(
                    request,
                    model,
                    body,
                    stream,
                    strip_usage,
                    started,
                    outcome,
                    forwarding,
                    affinity,
                    key.name,
                )
            except GatewayError as err:
                outcome.status = err.status
                outcome.error_reason = outcome.error_reason or error_reason(err)
                response = err.response(spec.errors)
            await _deliver(request, response)  # before the bookkeeping below: the client need not wait
            return response
        except (asyncio.CancelledError, ConnectionError):
            outcome.status = 499  # client closed the request (nginx's convention)
            outcome.error_reason = "client_disconnected"
            raise
        finally:
            if spec.usage == "none":
                outcome.no_usage()  # tokenizer routes: counted as requests, not as tokens served
            self.accounting.record(request, key, model, stream, started, outcome, reserved)

    async def stored_response(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/responses/{id} and POST .../cancel, on the replica that holds the response."""
        started = time.monotonic()
        outcome = Outcome()
        key, model = ANONYMOUS, UNKNOWN_MODEL
        stream = request.method == "GET" and request.query.get("stream", "").lower() == "true"
        try:
            key = self.authenticate(request)
            model, backend = stored_response_holder(
                request.match_info["response_id"], key, self.registry.routes
            )
            self.accounting.admit(key, started)
            route = self.registry.route(model)
            assert route is not None
            forwarding = Forwarding(method=request.method, pinned=backend)
            return await self.proxy.forward(request, route, b"", stream, False, started, outcome, forwarding)
        except GatewayError as err:
            outcome.status = err.status
            outcome.error_reason = outcome.error_reason or error_reason(err)
            return err.response()
        except (asyncio.CancelledError, ConnectionError):
            outcome.status = 499
            outcome.error_reason = "client_disconnected"
            raise
        finally:
            outcome.no_usage()  # its tokens were metered when it was created
            self.accounting.record(request, key, model, stream, started, outcome)

    async def _serve(
        self,
        request: web.Request,
        model: str,
        body: bytes,
        stream: bool,
        strip_usage: bool,
        started: float,
        outcome: Outcome,
        forwarding: Forwarding,
        affinity_key: int | None = None,
        caller: str = "",
    ) -> web.StreamResponse:
        route = self.registry.route(model)
        assert route is not None
        gauge = self.metrics.model_in_flight_of(model, route.namespace or "", route.llmserve or "")
        gauge.inc()
        try:
            if forwarding.pinned is None:  # a pinned replica exists already: nothing to wait for
                route = await self.holder.wait_for_replica(route)
            return await self.proxy.forward(
                request, route, body, stream, strip_usage, started, outcome, forwarding, affinity_key, caller
            )
        finally:
            gauge.dec()

    async def _read_json(self, request: web.Request) -> tuple[bytes, dict[str, Any]]:
        try:
            check_content_headers(request)
            raw = await read_body(request, self.settings.max_body_bytes, self.settings.body_timeout_seconds)
            return raw, await decode_json_object(raw)
        except BodyError as err:
            raise GatewayError(err.status, err.message, code=err.code) from None

    def _model_of(self, payload: dict[str, Any], key: ApiKey) -> str:
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(
                400, "Missing required parameter: 'model' (a served model name, see GET /v1/models).",
                code="missing_model", param="model",
            )  # fmt: skip
        if not key.allows(model):
            raise GatewayError(
                403,
                f"API key {key.name!r} is not allowed to use model {model!r}.",
                code="model_not_allowed",
                param="model",
            )
        if self.registry.route(model) is None:
            raise GatewayError(
                404,
                f"The model {model!r} does not exist; GET /v1/models lists the available ones.",
                code="model_not_found",
                param="model",
            )
        return model

    @staticmethod
    def _upstream_body(
        spec: ProxiedRoute, raw: bytes, payload: dict[str, Any], stream: bool
    ) -> tuple[bytes, bool]:
        """The body to send on: the client's bytes unchanged, except that streams are asked for usage
        (to meter tokens), whose chunk is removed again on the way back if the client did not ask."""
        if not stream or not spec.stream_usage_option:
            return raw, False
        options = payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            return raw, False
        if "stream_options" not in payload:
            spliced = with_member_first(raw, _INCLUDE_USAGE)
            if spliced is not None:
                return spliced, True
        payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return json.dumps(payload).encode(), True


# Plain requests differ only in the shape of a mid-stream error event: one Forwarding per style.
_FORWARDING_BY_STYLE = {style: Forwarding(error_style=style) for style in ("openai", "anthropic")}


async def _deliver(request: web.Request, response: web.StreamResponse) -> None:
    """Sends a response the handler would otherwise return for aiohttp to send, so that what the
    handler does after it (metrics, metering, the access log) happens after the client has it."""
    if not response.prepared:
        await response.prepare(request)
        await response.write_eof()


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _refuse(route: RefusedRoute) -> Any:
    async def refuse(request: web.Request) -> web.Response:
        return GatewayError(route.status, refusal_message(route), code=route.code).response()

    return refuse


@web.middleware
async def _errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error the client sees is OpenAI-shaped, including unknown routes and crashes."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except GatewayError as err:
        return err.response()
    except web.HTTPException as err:
        if err.status < 400:
            raise
        message = f"{request.method} {request.path}: {err.reason}"
        headers = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else None
        return web.json_response(error_body(err.status, message), status=err.status, headers=headers)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("event=internal_error method=%s path=%s", request.method, request.path)
        return web.json_response(error_body(500, "Internal gateway error."), status=500)
