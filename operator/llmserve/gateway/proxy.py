"""Forwards one request to a backend: retries before the first byte, streams chunk by chunk after it."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from llmserve.gateway.burst_backends import SOURCE as BURST_SOURCE
from llmserve.gateway.burst_backends import choose_preferring_local
from llmserve.gateway.errors import GatewayError
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.registry import Backend, ModelRoute, Registry
from llmserve.gateway.routing import Candidate, choose
from llmserve.gateway.usage import SseUsageTap, Usage, usage_from_body

log = logging.getLogger(__name__)

# A connection that failed or closed before the response head arrived: nothing reached the client,
# so the request may run elsewhere.
_BEFORE_HEAD = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_CONNECT_TIMEOUT = aiohttp.ConnectionTimeoutError
_HOP_BY_HOP_OUT = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


@dataclass(frozen=True)
class ProxySettings:
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 600.0  # longest silence from a backend, incl. an unstreamed answer
    request_timeout_seconds: float = 0.0  # whole upstream exchange; 0 = no limit
    max_attempts: int = 3  # backends tried before giving up
    eject_seconds: float = 5.0  # a backend that refused a connection is avoided this long


@dataclass(frozen=True)
class Forwarding:
    """How one request differs from a plain POST to any replica (the Responses API and Anthropic routes)."""

    method: str = "POST"
    pinned: Backend | None = None  # the replica holding state the request needs; no other will do
    body_for_backend: Callable[[Backend], bytes] | None = None  # e.g. an id that leads back to the replica
    error_style: str = "openai"  # shape of a mid-stream error event


_PLAIN = Forwarding()


@dataclass
class Outcome:
    """What happened, for metrics, metering and the access log."""

    status: int = 0
    backend: str = ""
    attempts: int = 0
    usage: Usage | None = None
    first_byte_seconds: float | None = None
    error_reason: str = ""  # set when the request failed after the response started
    tried: list[str] = field(default_factory=list)


class _Retry(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Proxy:
    def __init__(
        self,
        registry: Registry,
        session: aiohttp.ClientSession,
        settings: ProxySettings,
        metrics: GatewayMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.registry, self.session, self.settings, self.metrics = registry, session, settings, metrics
        self.rng = rng or random.Random()
        self.timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout_seconds or None,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.read_timeout_seconds or None,
        )

    def pick(self, route: ModelRoute, exclude: set[str]) -> Backend | None:
        now = time.monotonic()
        by_url = {b.url: b for b in route.backends if b.url not in exclude}
        candidates = []
        for url in by_url:
            load = self.registry.loads.get(url)
            if load is None:
                candidates.append(Candidate(url, 0))
                continue
            candidates.append(
                Candidate(
                    url,
                    load.outstanding,
                    load.scraped_running,
                    load.scraped_waiting,
                    load.kv_usage_fraction,
                    ejected=load.ejected_until > now,
                )
            )
        rented = {url for url, b in by_url.items() if b.source == BURST_SOURCE}
        chosen = (
            choose_preferring_local(candidates, rented, self.rng) if rented else choose(candidates, self.rng)
        )
        return None if chosen is None else by_url[chosen.key]

    async def forward(
        self,
        request: web.Request,
        route: ModelRoute,
        body: bytes,
        stream: bool,
        strip_usage_chunk: bool,
        started: float,
        outcome: Outcome,
        forwarding: Forwarding = _PLAIN,
    ) -> web.StreamResponse:
        """Sends the request to the least-loaded backend, moving on to another on connect failures and
        503s before the first byte; raises GatewayError when no backend could take it."""
        model = route.served_name
        tried: set[str] = set()
        last_problem = "no ready replica"
        for _ in range(self.settings.max_attempts):
            if forwarding.pinned is not None:
                current = ModelRoute(model, (forwarding.pinned,))
            else:
                current = self.registry.route(model) or route
            backend = self.pick(current, tried)
            if backend is None:
                break
            tried.add(backend.url)
            outcome.attempts += 1
            outcome.backend = backend.label
            outcome.tried.append(backend.label)
            load = self.registry.load(backend)
            load.outstanding += 1
            gauge = self.metrics.backend_in_flight.labels(model, backend.label)
            gauge.inc()
            attempt_body = (
                body if forwarding.body_for_backend is None else forwarding.body_for_backend(backend)
            )
            try:
                return await self._attempt(
                    request, backend, attempt_body, stream, strip_usage_chunk, started, outcome, forwarding
                )
            except _Retry as retry:
                last_problem = f"{backend.label}: {retry}"
                self.metrics.retries.labels(model, retry.reason).inc()
                log.info(
                    "event=upstream_retry model=%s backend=%s reason=%s detail=%r",
                    model,
                    backend.label,
                    retry.reason,
                    str(retry),
                )
            finally:
                load.outstanding -= 1
                gauge.dec()
        log.warning(
            "event=no_replica_took_request model=%s tried=%d last=%r", model, len(tried), last_problem
        )
        raise GatewayError(
            503,
            f"No replica of model {model!r} could take the request (tried {len(tried)}); retry later.",
            code="upstream_unavailable",
            retry_after_seconds=1,
        )

    async def _attempt(
        self,
        request: web.Request,
        backend: Backend,
        body: bytes,
        stream: bool,
        strip_usage_chunk: bool,
        started: float,
        outcome: Outcome,
        forwarding: Forwarding = _PLAIN,
    ) -> web.StreamResponse:
        headers = {"Content-Type": "application/json", **dict(backend.headers)}
        request_id = request.headers.get("X-Request-Id")
        if request_id:
            headers["X-Request-Id"] = request_id
        # POSTs carry everything in the body; a GET's query (e.g. ?stream=true) is part of the request.
        path = request.rel_url.path if forwarding.method == "POST" else request.rel_url.raw_path_qs
        url = backend.url.rstrip("/") + path
        try:
            upstream = await self.session.request(
                forwarding.method, url, data=body, headers=headers, timeout=self.timeout,
                ssl=backend.tls if backend.tls is not None else True,
            )  # fmt: skip
        except _CONNECT_TIMEOUT as err:
            self._eject(backend)
            raise _Retry("connect_timeout", repr(err)) from err
        except _BEFORE_HEAD as err:
            if isinstance(err, aiohttp.ClientConnectorError):
                self._eject(backend)
            raise _Retry("connect_failed", repr(err)) from err
        except TimeoutError as err:  # waited read_timeout for the head of an unstreamed answer
            raise GatewayError(
                504,
                f"The replica did not answer within {self.settings.read_timeout_seconds:g}s.",
                code="upstream_timeout",
            ) from err
        try:
            if upstream.status == 503:
                await upstream.read()
                raise _Retry("status_503", "replica answered 503")
            content_type = upstream.headers.get("Content-Type", "")
            if stream and upstream.status == 200 and content_type.startswith("text/event-stream"):
                return await self._stream(
                    request, upstream, strip_usage_chunk, started, outcome, forwarding.error_style
                )
            return await self._whole(upstream, started, outcome)
        finally:
            # A fully read answer returns its connection to the pool; anything else (client gone,
            # stream broken) closes it, which is how the engine learns to stop generating.
            if upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()

    async def _whole(
        self, upstream: aiohttp.ClientResponse, started: float, outcome: Outcome
    ) -> web.Response:
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            outcome.error_reason = "upstream_broken_body"
            log.warning("event=upstream_broken_body error=%r", str(err) or repr(err))
            raise GatewayError(
                502, "The replica failed while sending its answer; retry.", code="upstream_error"
            ) from err
        outcome.first_byte_seconds = time.monotonic() - started
        outcome.status = upstream.status
        if upstream.status == 200:
            outcome.usage = usage_from_body(payload)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP_OUT}
        return web.Response(status=upstream.status, body=payload, headers=headers)

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        strip_usage_chunk: bool,
        started: float,
        outcome: Outcome,
        error_style: str = "openai",
    ) -> web.StreamResponse:
        # Nothing is sent to the client before the first chunk arrives, so a replica that dies between
        # its response head and its first token is still retried elsewhere.
        try:
            first = await upstream.content.readany()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise _Retry("broken_before_first_chunk", repr(err)) from err
        if not first:
            raise _Retry("empty_stream", "replica closed the stream without sending anything")
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        await response.prepare(request)
        outcome.status = 200
        tap = SseUsageTap(strip_usage_chunk)
        chunk = first
        try:
            while chunk:
                out = tap.feed(chunk)
                if out:
                    await response.write(out)
                    if outcome.first_byte_seconds is None:
                        outcome.first_byte_seconds = time.monotonic() - started
                chunk = await upstream.content.readany()
        except (aiohttp.ClientError, TimeoutError) as err:
            outcome.usage = tap.usage
            outcome.error_reason = "upstream_broken_stream"
            await self._fail_stream(request, response, err, error_style)
            return response
        rest = tap.flush()
        if rest:
            await response.write(rest)
        outcome.usage = tap.usage
        await response.write_eof()
        return response

    async def _fail_stream(
        self, request: web.Request, response: web.StreamResponse, err: BaseException, style: str = "openai"
    ) -> None:
        """Tells the client the stream broke: an SSE error event (which OpenAI SDKs raise), then the
        connection is closed without the final chunk so plain HTTP clients see a truncated body too."""
        log.warning("event=upstream_broken_stream path=%s error=%r", request.path, str(err) or repr(err))
        error = GatewayError(
            502, "The replica failed mid-stream; the output is incomplete.", code="upstream_error"
        )
        try:
            await response.write(error.sse_event(style))
        except ConnectionError:
            pass
        if request.transport is not None:
            request.transport.close()

    def _eject(self, backend: Backend) -> None:
        self.registry.load(backend).ejected_until = time.monotonic() + self.settings.eject_seconds
