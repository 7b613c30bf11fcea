"""Relays a backend's answer to the client once it is committed to: read whole, passed through, or streamed.

The proxy (proxy.py) picks the backend and retries elsewhere until an answer can be relayed; from here on
the client has been, or is about to be, sent bytes, so a failure is reported to the client, not retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from llmserve.gateway.backend_safety import client_headers, describe_error
from llmserve.gateway.errors import GatewayError
from llmserve.gateway.metering import USAGE_TAIL_BYTES, charged_usage, usage_from_tail
from llmserve.gateway.outcome import Outcome
from llmserve.gateway.registry import Backend
from llmserve.gateway.usage import SseUsageTap

# The proxy's logger: these lines were written by proxy.py before the relays had their own module, and
# log queries select on `logger=`.
log = logging.getLogger("llmserve.gateway.proxy")

# Unstreamed answers up to this size are read whole (to meter their usage); larger ones are passed
# through chunk by chunk, with usage read from the tail, so one big answer cannot hold the memory.
WHOLE_ANSWER_MAX_BYTES = 1024 * 1024


class HeadWithFirstChunk(web.StreamResponse):
    """A StreamResponse whose head leaves with its first body bytes, in one write (one TCP segment, one
    wake-up of the client) instead of two; aiohttp's own Response holds its head the same way. A
    response ended with no body sends its head with the end (write_eof)."""

    _send_headers_immediately = False


class ClientGone(ConnectionError):
    """Writing to the client failed: the client left. Not an upstream failure."""


async def _send(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError as err:  # incl. aiohttp's ClientConnectionResetError, also a ClientError
        raise ClientGone(type(err).__name__) from None


async def relay_whole(upstream: aiohttp.ClientResponse, started: float, outcome: Outcome) -> web.Response:
    """An unstreamed answer of known, bounded size, read whole and sent in one response."""
    try:
        payload = await upstream.read()
    except (aiohttp.ClientError, TimeoutError) as err:
        outcome.error_reason = "upstream_broken_body"
        log.warning("event=upstream_broken_body error=%r", describe_error(err))
        raise GatewayError(
            502, "The replica failed while sending its answer; retry.", code="upstream_error"
        ) from err
    outcome.first_byte_seconds = time.monotonic() - started
    outcome.status = upstream.status
    if upstream.status == 200:
        outcome.answer = payload  # its usage is read after it was sent (Outcome.settle_usage)
    return web.Response(status=upstream.status, body=payload, headers=client_headers(upstream.headers))


async def relay_pass_through(
    request: web.Request, upstream: aiohttp.ClientResponse, started: float, outcome: Outcome
) -> web.StreamResponse:
    """A large (or unsized) unstreamed answer, relayed chunk by chunk; usage comes from its tail."""
    response = HeadWithFirstChunk(status=upstream.status, headers=client_headers(upstream.headers))
    await response.prepare(request)
    outcome.status = upstream.status
    tail = b""
    try:
        async for chunk in upstream.content.iter_any():
            if outcome.first_byte_seconds is None:
                outcome.first_byte_seconds = time.monotonic() - started
            await _send(response, chunk)
            tail = (tail + chunk)[-USAGE_TAIL_BYTES:]
    except (aiohttp.ClientError, TimeoutError) as err:
        outcome.status, outcome.error_reason = 502, "upstream_broken_body"
        await _fail_stream(request, response, err)
        return response
    if upstream.status == 200:
        outcome.usage = usage_from_tail(tail)
    await response.write_eof()
    return response


async def relay_stream(
    request: web.Request,
    backend: Backend,
    upstream: aiohttp.ClientResponse,
    first: bytes,
    strip_usage_chunk: bool,
    started: float,
    outcome: Outcome,
    error_style: str,
    stream_idle_timeout_seconds: float,
    eject: Callable[[Backend], None],
) -> web.StreamResponse:
    """An SSE stream whose first chunk (`first`, non-empty) has arrived, relayed chunk by chunk with its
    usage tapped; a backend silent mid-stream for `stream_idle_timeout_seconds` is passed to `eject`."""
    response = HeadWithFirstChunk(
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
    _bound_silence(upstream, stream_idle_timeout_seconds)
    last = b""
    try:
        while chunk:
            out = tap.feed(chunk)
            if upstream.content.at_eof():
                last = out  # the stream's end arrived with it: both leave in one write below
                break
            if out:
                await _send(response, out)
                if outcome.first_byte_seconds is None:
                    outcome.first_byte_seconds = time.monotonic() - started
            chunk = await upstream.content.readany()
    except ClientGone:
        outcome.usage = charged_usage(tap)  # charged for what it was sent
        raise
    except (aiohttp.ClientError, TimeoutError) as err:
        outcome.usage = charged_usage(tap)
        outcome.status = 502  # the client saw 200 then an error event: a failed request, not a 200
        outcome.error_reason = "upstream_broken_stream"
        if isinstance(err, TimeoutError):
            outcome.error_reason = "upstream_stream_silent"
            eject(backend)  # a replica silent mid-stream is frozen: out of rotation
        await _fail_stream(request, response, err, error_style)
        return response
    except (asyncio.CancelledError, ConnectionError):
        # The client left: it is charged for what it was sent (the engine stops when the
        # upstream connection closes).
        outcome.usage = charged_usage(tap)
        raise
    last += tap.flush()
    outcome.usage = tap.usage
    if last and outcome.first_byte_seconds is None:
        outcome.first_byte_seconds = time.monotonic() - started
    try:
        await response.write_eof(last)
    except ConnectionError:
        # Every byte of the stream was handed to the client's socket; a client that closes as soon
        # as it has read the final event (as SDKs do) can reset the connection before the chunked
        # terminator drains. That is a delivered stream, not a client that left early.
        pass
    return response


async def _fail_stream(
    request: web.Request, response: web.StreamResponse, err: BaseException, style: str = "openai"
) -> None:
    """Tells the client the stream broke: an SSE error event (which OpenAI SDKs raise), then the
    connection is closed without the final chunk so plain HTTP clients see a truncated body too."""
    log.warning("event=upstream_broken_stream path=%s error=%r", request.path, describe_error(err))
    error = GatewayError(
        502, "The replica failed mid-stream; the output is incomplete.", code="upstream_error"
    )
    try:
        await response.write(error.sse_event(style))
    except ConnectionError:
        pass
    if request.transport is not None:
        request.transport.close()


def _bound_silence(upstream: aiohttp.ClientResponse, idle_seconds: float) -> None:
    """Bounds the silence inside a started stream by the socket read deadline that aiohttp re-arms on
    every arrival (sock_read, until now the wait for the response head): no timer of the gateway's own
    to set and cancel around each chunk. Its expiry is a TimeoutError, like the head's."""
    protocol = upstream.connection.protocol if upstream.connection is not None else None
    # At the end of the answer aiohttp drops the deadline; one armed after that would outlive it.
    if idle_seconds and protocol is not None and not upstream.content.is_eof():
        protocol.read_timeout = idle_seconds
        protocol.start_timeout()
